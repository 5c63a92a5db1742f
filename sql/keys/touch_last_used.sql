-- Stamp the keys a web process authenticated since its last flush (at most once a minute per
-- process, never per request): last_used_at is therefore accurate to about a minute.
-- Parameter: ids (text[]).
UPDATE api_keys SET last_used_at = now()
WHERE id = ANY (%(ids)s);

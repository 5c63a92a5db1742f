-- Stamp the keys a web process authenticated since its last flush (at most once a minute per
-- process, from its key cache's watcher thread, never per request): last_used_at is therefore
-- accurate to about a minute. A key another process stamped in the last 30 s is left alone, so
-- that N processes seeing the same fleet write its rows about once a minute, not N times.
-- Parameter: ids (text[]).
UPDATE api_keys SET last_used_at = now()
WHERE id = ANY (%(ids)s)
  AND (last_used_at IS NULL OR last_used_at < now() - interval '30 seconds');

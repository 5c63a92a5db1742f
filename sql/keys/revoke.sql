-- Revoke a key (idempotent: a revoked key keeps its first revocation time). Parameter: id.
-- Returns the row if the key exists, so that an unknown id answers 404.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = %(id)s
RETURNING id, revoked_at;

-- The key a token names, for authentication of a token missing from the process's cache
-- (web/auth.py), with its hash to compare in constant time. Parameter: id.
SELECT id, name, token_hash, scopes, device_kind, device_id, rate_limit, expires_at, revoked_at
FROM api_keys
WHERE id = %(id)s;

-- The key a token names, for authentication (web/auth.py), with its hash to compare in constant
-- time. Parameter: id. Also stamps last_used_at: this runs once per key per process cache fill, not
-- per request, so last_used_at is as fresh as the cache's time to live.
UPDATE api_keys SET last_used_at = now()
WHERE id = %(id)s
RETURNING id, name, token_hash, scopes, device_kind, device_id, rate_limit, expires_at, revoked_at;

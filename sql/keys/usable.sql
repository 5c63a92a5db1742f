-- Every key that can be used now (not revoked, not expired), the most recently used first: each web
-- process loads them into its key cache at once (on its first request, after a revocation, and
-- once per AUTH_CACHE_SECONDS), so that a fleet's device keys cost no lookup one by one.
-- Parameter: limit (the cache's size).
SELECT id, name, token_hash, scopes, device_kind, device_id, rate_limit, expires_at, revoked_at
FROM api_keys
WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
ORDER BY last_used_at DESC NULLS LAST, id
LIMIT %(limit)s;

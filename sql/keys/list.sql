-- One page of keys, without secrets, in id order (keyset pagination: give the last id seen as
-- `after`, '' for the first page). Parameters: after, limit.
SELECT id, name, scopes, device_kind, device_id, rate_limit, created_at, expires_at, revoked_at, last_used_at
FROM api_keys
WHERE id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- Create one API key. Parameters: id, name, token_hash, scopes (text[]), device_kind, device_id,
-- rate_limit, expires_at (each of the last four may be NULL). Returns the stored row for the answer.
INSERT INTO api_keys (id, name, token_hash, scopes, device_kind, device_id, rate_limit, expires_at)
VALUES (%(id)s, %(name)s, %(token_hash)s, %(scopes)s, %(device_kind)s, %(device_id)s, %(rate_limit)s,
        %(expires_at)s)
RETURNING id, name, scopes, device_kind, device_id, rate_limit, created_at, expires_at, revoked_at, last_used_at;

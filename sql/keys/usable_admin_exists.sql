-- Whether any admin key can still be used (not revoked, not expired): `make run` creates one and
-- writes it to .data/admin.key only when none exists. No parameters.
SELECT EXISTS (
    SELECT 1 FROM api_keys
    WHERE 'admin' = ANY (scopes) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
);

-- API keys: who may call the HTTP API and what they may do (web/auth.py checks them, web/keys.py
-- manages them). The secret is never stored: token_hash is the SHA-256 of the whole token (the
-- secret holds 256 random bits, so a slow password hash adds nothing). A key bound to a device
-- (device_kind + device_id) may write and read only that device. rate_limit is a limit string such
-- as '120/minute' (NULL: the default of its kind of key from settings).
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    name         text        NOT NULL,
    token_hash   text        NOT NULL,
    scopes       text[]      NOT NULL DEFAULT '{}',
    device_kind  text        CHECK (device_kind IN ('vehicle', 'meter')),
    device_id    text,
    rate_limit   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CHECK ((device_kind IS NULL) = (device_id IS NULL))
);

-- The bootstrap asks "does any usable admin key exist?"; few keys are admin keys.
CREATE INDEX api_keys_admin_idx ON api_keys (id) WHERE 'admin' = ANY (scopes) AND revoked_at IS NULL;

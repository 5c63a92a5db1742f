-- Conflicting duplicates: a reading that arrived for a (device, ts) history already held with other
-- values. History keeps the first; the drain records the rejected one here (GET /v1/conflicts).
-- stored and rejected hold the values with the API's field names. The unique key includes a hash of
-- the rejected values, so a redelivered batch (worker crash before XACK) records nothing twice,
-- while two different rejected values for the same reading are both kept.
CREATE TABLE reading_conflicts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text        NOT NULL CHECK (kind IN ('meter', 'vehicle')),
    device_id      text        NOT NULL,
    ts             timestamptz NOT NULL,
    stored         jsonb       NOT NULL,
    rejected       jsonb       NOT NULL,
    rejected_hash  text        GENERATED ALWAYS AS (md5(rejected::text)) STORED,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, device_id, ts, rejected_hash)
);

-- GET /v1/conflicts pages by (ts, id), optionally for one device.
CREATE INDEX reading_conflicts_ts ON reading_conflicts (ts, id);
CREATE INDEX reading_conflicts_device_ts ON reading_conflicts (device_id, ts, id);

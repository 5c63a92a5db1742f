-- Move staged meter rows into history (duplicates ignored) and move meter_latest forward.
-- The latest state is taken from the rows actually inserted, so it always matches history.
WITH inserted AS (
    INSERT INTO meter_readings (meter_id, ts, kwh_consumed_ac, voltage)
    SELECT meter_id, ts, kwh_consumed_ac, voltage FROM meter_staging
    ON CONFLICT DO NOTHING
    RETURNING meter_id, ts, kwh_consumed_ac, voltage
), newest AS (
    SELECT DISTINCT ON (meter_id) meter_id, ts, kwh_consumed_ac, voltage
    FROM inserted
    ORDER BY meter_id, ts DESC
), upserted AS (
    INSERT INTO meter_latest AS l (meter_id, ts, kwh_consumed_ac, voltage, updated_at)
    SELECT meter_id, ts, kwh_consumed_ac, voltage, now() FROM newest
    ON CONFLICT (meter_id) DO UPDATE
        SET ts = EXCLUDED.ts,
            kwh_consumed_ac = EXCLUDED.kwh_consumed_ac,
            voltage = EXCLUDED.voltage,
            updated_at = EXCLUDED.updated_at
        WHERE l.ts < EXCLUDED.ts
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS rows_written,
       (SELECT count(*) FROM upserted) AS latest_moved;

-- Move staged vehicle rows into history (duplicates ignored) and move vehicle_latest forward.
-- The latest state is taken from the rows actually inserted, so it always matches history.
WITH inserted AS (
    INSERT INTO vehicle_readings (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp)
    SELECT vehicle_id, ts, soc, kwh_delivered_dc, battery_temp FROM vehicle_staging
    ON CONFLICT DO NOTHING
    RETURNING vehicle_id, ts, soc, kwh_delivered_dc, battery_temp
), newest AS (
    SELECT DISTINCT ON (vehicle_id) vehicle_id, ts, soc, kwh_delivered_dc, battery_temp
    FROM inserted
    ORDER BY vehicle_id, ts DESC
), upserted AS (
    INSERT INTO vehicle_latest AS l (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp, updated_at)
    SELECT vehicle_id, ts, soc, kwh_delivered_dc, battery_temp, now() FROM newest
    ON CONFLICT (vehicle_id) DO UPDATE
        SET ts = EXCLUDED.ts,
            soc = EXCLUDED.soc,
            kwh_delivered_dc = EXCLUDED.kwh_delivered_dc,
            battery_temp = EXCLUDED.battery_temp,
            updated_at = EXCLUDED.updated_at
        WHERE l.ts < EXCLUDED.ts
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS rows_written,
       (SELECT count(*) FROM upserted) AS latest_moved;

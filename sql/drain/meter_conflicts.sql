-- Record the staged meter rows whose (meter_id, ts) history holds with other values.
-- Runs after drain/meter_write.sql in the same transaction, only when some staged rows were not
-- inserted; same rules as drain/vehicle_conflicts.sql. Returns how many were recorded.
WITH recorded AS (
    INSERT INTO reading_conflicts (kind, device_id, ts, stored, rejected)
    SELECT DISTINCT 'meter', s.meter_id, s.ts,
           jsonb_build_object('kwhConsumedAc', h.kwh_consumed_ac, 'voltage', h.voltage),
           jsonb_build_object('kwhConsumedAc', s.kwh_consumed_ac, 'voltage', s.voltage)
    FROM meter_staging s
    JOIN meter_readings h ON h.meter_id = s.meter_id AND h.ts = s.ts
    WHERE (h.kwh_consumed_ac, h.voltage) IS DISTINCT FROM (s.kwh_consumed_ac, s.voltage)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM recorded;

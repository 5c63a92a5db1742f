-- Record the staged vehicle rows whose (vehicle_id, ts) history holds with other values.
-- Runs after drain/vehicle_write.sql in the same transaction, only when some staged rows were not
-- inserted (a batch without duplicates has no conflict). A staged row equal to the stored one (the
-- one just inserted, or a repeat with the same values) is no conflict; ON CONFLICT DO NOTHING on
-- the unique key makes a redelivered batch record nothing twice. Returns how many were recorded.
WITH recorded AS (
    INSERT INTO reading_conflicts (kind, device_id, ts, stored, rejected)
    SELECT DISTINCT 'vehicle', s.vehicle_id, s.ts,
           jsonb_build_object('soc', h.soc, 'kwhDeliveredDc', h.kwh_delivered_dc, 'batteryTemp', h.battery_temp),
           jsonb_build_object('soc', s.soc, 'kwhDeliveredDc', s.kwh_delivered_dc, 'batteryTemp', s.battery_temp)
    FROM vehicle_staging s
    JOIN vehicle_readings h ON h.vehicle_id = s.vehicle_id AND h.ts = s.ts
    WHERE (h.soc, h.kwh_delivered_dc, h.battery_temp) IS DISTINCT FROM (s.soc, s.kwh_delivered_dc, s.battery_temp)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM recorded;

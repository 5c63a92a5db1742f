-- Benchmark setup, after the day's load: each loaded vehicle's newest reading in vehicle_latest, as
-- the drain keeps it (the rollups rebuild goes through the devices of *_latest). Moves only forward.
-- Parameters: since (the start of the loaded range's last minute).
INSERT INTO vehicle_latest (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp)
SELECT DISTINCT ON (r.vehicle_id) r.vehicle_id, r.ts, r.soc, r.kwh_delivered_dc, r.battery_temp
FROM vehicle_readings r
WHERE r.ts >= %(since)s::timestamptz
ORDER BY r.vehicle_id, r.ts DESC
ON CONFLICT (vehicle_id) DO UPDATE SET
    ts = EXCLUDED.ts, soc = EXCLUDED.soc, kwh_delivered_dc = EXCLUDED.kwh_delivered_dc,
    battery_temp = EXCLUDED.battery_temp, updated_at = now()
WHERE EXCLUDED.ts > vehicle_latest.ts;

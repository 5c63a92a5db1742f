-- Benchmark setup, after the day's load: each loaded meter's newest reading in meter_latest, as the
-- drain keeps it (the rollups rebuild goes through the devices of *_latest). Moves only forward.
-- Parameters: since (the start of the loaded range's last minute).
INSERT INTO meter_latest (meter_id, ts, kwh_consumed_ac, voltage)
SELECT DISTINCT ON (r.meter_id) r.meter_id, r.ts, r.kwh_consumed_ac, r.voltage
FROM meter_readings r
WHERE r.ts >= %(since)s::timestamptz
ORDER BY r.meter_id, r.ts DESC
ON CONFLICT (meter_id) DO UPDATE SET
    ts = EXCLUDED.ts, kwh_consumed_ac = EXCLUDED.kwh_consumed_ac, voltage = EXCLUDED.voltage, updated_at = now()
WHERE EXCLUDED.ts > meter_latest.ts;

-- The durable latest reading of some vehicles (the fallback when Redis has none).
SELECT vehicle_id, ts, soc, kwh_delivered_dc, battery_temp
FROM vehicle_latest
WHERE vehicle_id = ANY(%(ids)s);

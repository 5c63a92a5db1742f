-- The durable latest reading of some meters (the fallback when Redis has none).
SELECT meter_id, ts, kwh_consumed_ac, voltage
FROM meter_latest
WHERE meter_id = ANY(%(ids)s);

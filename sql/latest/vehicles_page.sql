-- One page of every vehicle with a durable latest reading, in id order, with the meter mapped to it (or null).
-- Parameters: after (the last id of the previous page; '' for the first), limit.
-- Keyset on the primary key, never OFFSET, so a page costs the same at vehicle 10 and vehicle 10,000.
SELECT l.vehicle_id, l.ts, l.soc, l.kwh_delivered_dc, l.battery_temp, m.meter_id
FROM vehicle_latest AS l
LEFT JOIN vehicle_meter_map AS m ON m.vehicle_id = l.vehicle_id
WHERE l.vehicle_id > %(after)s
ORDER BY l.vehicle_id
LIMIT %(limit)s;

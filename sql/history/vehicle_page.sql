-- One page of a vehicle's raw history, oldest first: the readings with after_ts < ts <= to_ts.
-- Parameters: device_id, after_ts, to_ts, limit.
-- Keyset pagination on the primary key (vehicle_id, ts): the next page starts after the last ts of
-- this one, so pages never skip or repeat a reading, and no OFFSET walks over earlier pages.
SELECT r.ts, r.soc, r.kwh_delivered_dc, r.battery_temp
FROM vehicle_readings r
WHERE r.vehicle_id = %(device_id)s AND r.ts > %(after_ts)s AND r.ts <= %(to_ts)s
ORDER BY r.ts
LIMIT %(limit)s;

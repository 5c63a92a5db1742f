-- One page of a meter's raw history, oldest first: the readings with after_ts < ts <= to_ts.
-- Parameters: device_id, after_ts, to_ts, limit.
-- Keyset pagination on the primary key (meter_id, ts): the next page starts after the last ts of
-- this one, so pages never skip or repeat a reading, and no OFFSET walks over earlier pages.
SELECT r.ts, r.kwh_consumed_ac, r.voltage
FROM meter_readings r
WHERE r.meter_id = %(device_id)s AND r.ts > %(after_ts)s AND r.ts <= %(to_ts)s
ORDER BY r.ts
LIMIT %(limit)s;

-- Benchmark setup, not ingest: one reading a minute per device for a range of devices and minutes,
-- written in primary key order (which keeps the index build cheap).
INSERT INTO meter_readings (meter_id, ts, kwh_consumed_ac, voltage)
SELECT 'meter-' || lpad(d::text, 5, '0'),
       %(first)s::timestamptz + m * interval '1 minute',
       mod(d, 97) + m * 0.05,
       225.0 + mod(d, 10)
FROM generate_series(%(first_device)s::int, %(last_device)s::int) AS d,
     generate_series(0, %(minutes)s::int - 1) AS m
ORDER BY d, m;

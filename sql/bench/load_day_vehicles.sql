-- Benchmark setup, not ingest: one reading a minute per device for a range of devices and minutes,
-- written in primary key order (which keeps the index build cheap).
INSERT INTO vehicle_readings (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp)
SELECT 'vehicle-' || lpad(d::text, 5, '0'),
       %(first)s::timestamptz + m * interval '1 minute',
       mod(m, 100),
       mod(d, 97) + m * 0.045,
       20.0 + mod(d, 15)
FROM generate_series(%(first_device)s::int, %(last_device)s::int) AS d,
     generate_series(0, %(minutes)s::int - 1) AS m
ORDER BY d, m;

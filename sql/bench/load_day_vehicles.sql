-- Benchmark setup, not ingest: one reading a minute per vehicle for a range of minutes, written in
-- time order (every vehicle's reading of a minute, then the next minute), as live ingest writes them.
INSERT INTO vehicle_readings (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp)
SELECT 'vehicle-' || lpad(d::text, 5, '0'),
       %(first)s::timestamptz + m * interval '1 minute',
       mod(extract(epoch FROM %(first)s::timestamptz)::bigint / 60 + m, 100),
       mod(d, 97) + (extract(epoch FROM %(first)s::timestamptz)::bigint / 60 + m) * 0.045,
       20.0 + mod(d, 15)
FROM generate_series(%(first_minute)s::int, %(last_minute)s::int) AS m,
     generate_series(0, %(devices)s::int - 1) AS d
ORDER BY m, d;

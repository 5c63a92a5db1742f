-- Benchmark setup, not ingest: one reading a minute per meter for a range of minutes, written in
-- time order (every meter's reading of a minute, then the next minute), as live ingest writes them.
INSERT INTO meter_readings (meter_id, ts, kwh_consumed_ac, voltage)
SELECT 'meter-' || lpad(d::text, 5, '0'),
       %(first)s::timestamptz + m * interval '1 minute',
       mod(d, 97) + (extract(epoch FROM %(first)s::timestamptz)::bigint / 60 + m) * 0.05,
       225.0 + mod(d, 10)
FROM generate_series(%(first_minute)s::int, %(last_minute)s::int) AS m,
     generate_series(0, %(devices)s::int - 1) AS d
ORDER BY m, d;

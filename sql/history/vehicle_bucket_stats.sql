-- Per bucket of a vehicle's readings in (from_ts, to_ts]: the count, soc min/max/last and battery
-- temperature avg/max. Only buckets holding a reading. Parameters and bucketing as in
-- bucket_energy.sql (kind and max_power_kw unused).
SELECT CASE WHEN %(daily)s THEN date_trunc('day', r.ts - interval '1 microsecond', %(tz)s)
            ELSE date_bin(%(stride)s, r.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
           AS bucket,
       count(*) AS readings,
       min(r.soc) AS soc_min, max(r.soc) AS soc_max, (array_agg(r.soc ORDER BY r.ts DESC))[1] AS soc_last,
       avg(r.battery_temp::numeric) AS battery_temp_avg, max(r.battery_temp) AS battery_temp_max
FROM vehicle_readings r
WHERE r.vehicle_id = %(device_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
GROUP BY 1;

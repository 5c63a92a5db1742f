-- Per bucket of a meter's readings in (from_ts, to_ts]: the count and voltage avg/min/max. Only
-- buckets holding a reading. Parameters and bucketing as in bucket_energy.sql (kind and
-- max_power_kw unused).
SELECT CASE WHEN %(daily)s THEN date_trunc('day', r.ts - interval '1 microsecond', %(tz)s)
            ELSE date_bin(%(stride)s, r.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
           AS bucket,
       count(*) AS readings,
       avg(r.voltage::numeric) AS voltage_avg, min(r.voltage) AS voltage_min, max(r.voltage) AS voltage_max
FROM meter_readings r
WHERE r.meter_id = %(device_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
GROUP BY 1;

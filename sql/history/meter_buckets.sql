-- A meter's buckets in (from_ts, to_ts], one row per bucket holding a reading: its energy with the
-- counter flags, and its statistics.
-- Parameters: device_id, from_ts, to_ts, stride (interval), daily (bool), tz (IANA name),
-- max_power_kw (MAX_METER_POWER_KW).
-- Energy, bucketing, the literal kind, the one statement and the numeric average: as in
-- vehicle_buckets.sql.
WITH energy AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', s.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, s.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           sum(s.energy_kwh) AS energy_kwh,
           count(*) FILTER (WHERE s.is_reset) AS counter_resets,
           count(*) FILTER (WHERE s.is_glitch) AS glitches,
           count(*) FILTER (WHERE s.is_implausible) AS implausible_steps
    FROM counter_steps('meter', %(device_id)s, %(from_ts)s, %(to_ts)s, %(max_power_kw)s) s
    GROUP BY 1
), stats AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', r.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, r.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           count(*) AS readings,
           avg(r.voltage::numeric) AS voltage_avg, min(r.voltage) AS voltage_min, max(r.voltage) AS voltage_max
    FROM meter_readings r
    WHERE r.meter_id = %(device_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
    GROUP BY 1
)
SELECT stats.bucket, stats.readings, energy.energy_kwh, energy.counter_resets, energy.glitches,
       energy.implausible_steps, stats.voltage_avg, stats.voltage_min, stats.voltage_max
FROM stats JOIN energy USING (bucket);

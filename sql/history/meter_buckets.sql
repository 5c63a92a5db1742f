-- A meter's readings of (from_ts, to_ts] in buckets (start, end]: count, energy and its counter
-- flags, voltage avg/min/max; only buckets holding a reading.
-- Parameters: device_id, from_ts, to_ts, stride (interval), daily (bool), tz (IANA name),
-- max_meter_power_kw.
-- Bucketing and energy as in vehicle_buckets.sql: keyed by start, closed at the end, energy the sum
-- of counter_steps() contributions (sql/migrations/0008_counter_rules.sql).
WITH energy AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', s.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, s.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           sum(s.energy_kwh) AS energy_kwh,
           count(*) FILTER (WHERE s.is_reset) AS counter_resets,
           count(*) FILTER (WHERE s.is_glitch) AS glitches,
           count(*) FILTER (WHERE s.is_implausible) AS implausible_steps
    FROM counter_steps('meter', %(device_id)s, %(from_ts)s, %(to_ts)s, %(max_meter_power_kw)s) s
    GROUP BY 1
), stats AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', r.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, r.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           count(*) AS readings,
           avg(r.voltage) AS voltage_avg, min(r.voltage) AS voltage_min, max(r.voltage) AS voltage_max
    FROM meter_readings r
    WHERE r.meter_id = %(device_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
    GROUP BY 1
)
SELECT st.bucket, st.readings, e.energy_kwh, e.counter_resets, e.glitches, e.implausible_steps,
       st.voltage_avg, st.voltage_min, st.voltage_max
FROM stats st
JOIN energy e USING (bucket)
ORDER BY st.bucket;

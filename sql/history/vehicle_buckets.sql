-- A vehicle's readings of (from_ts, to_ts] in buckets (start, end]: count, energy and its counter
-- flags, soc min/max/last, battery temperature avg/max; only buckets holding a reading.
-- Parameters: device_id, from_ts, to_ts, stride (interval), daily (bool), tz (IANA name),
-- max_vehicle_power_kw.
-- A bucket is keyed by its start: the calendar day in tz when daily, else a multiple of stride
-- since the Unix epoch. Buckets are closed at the end like the analytics window, so ts minus one
-- microsecond (timestamptz's resolution) is what is binned. Energy is the sum of the readings'
-- counter_steps() contributions (sql/migrations/0008_counter_rules.sql), so the buckets of a window
-- add up exactly to the window's analytics.
WITH energy AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', s.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, s.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           sum(s.energy_kwh) AS energy_kwh,
           count(*) FILTER (WHERE s.is_reset) AS counter_resets,
           count(*) FILTER (WHERE s.is_glitch) AS glitches,
           count(*) FILTER (WHERE s.is_implausible) AS implausible_steps
    FROM counter_steps('vehicle', %(device_id)s, %(from_ts)s, %(to_ts)s, %(max_vehicle_power_kw)s) s
    GROUP BY 1
), stats AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', r.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, r.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           count(*) AS readings,
           min(r.soc) AS soc_min, max(r.soc) AS soc_max, (array_agg(r.soc ORDER BY r.ts DESC))[1] AS soc_last,
           avg(r.battery_temp) AS battery_temp_avg, max(r.battery_temp) AS battery_temp_max
    FROM vehicle_readings r
    WHERE r.vehicle_id = %(device_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
    GROUP BY 1
)
SELECT st.bucket, st.readings, e.energy_kwh, e.counter_resets, e.glitches, e.implausible_steps,
       st.soc_min, st.soc_max, st.soc_last, st.battery_temp_avg, st.battery_temp_max
FROM stats st
JOIN energy e USING (bucket)
ORDER BY st.bucket;

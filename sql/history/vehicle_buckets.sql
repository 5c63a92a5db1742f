-- A vehicle's buckets in (from_ts, to_ts], one row per bucket holding a reading: its energy with the
-- counter flags, and its statistics.
-- Parameters: device_id, from_ts, to_ts, stride (interval), daily (bool), tz (IANA name),
-- max_power_kw (MAX_VEHICLE_POWER_KW).
-- Energy is the sum of the readings' counter_steps() contributions (sql/migrations/0008_counter_rules.sql),
-- so that the buckets of a window add up exactly to the window's analytics. The kind is a literal:
-- a bind parameter kept the other kind's scans in psycopg's prepared generic plan (a fifth of the
-- energy's CPU). Both parts read the window in one statement (one snapshot: the same readings, so
-- the same buckets) and answer in one round trip; every value comes from the primary key's leaf
-- pages (migration 0010: index-only scans).
-- A bucket is keyed by its start: the calendar day in tz when daily, else a multiple of stride since
-- the Unix epoch. Buckets are (start, end] like the analytics window, so ts minus one microsecond
-- (timestamptz's resolution) is what is binned. Averages are over numeric: a float sum depends on
-- the order the rows are added in, which must not move a figure.
WITH energy AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', s.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, s.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           sum(s.energy_kwh) AS energy_kwh,
           count(*) FILTER (WHERE s.is_reset) AS counter_resets,
           count(*) FILTER (WHERE s.is_glitch) AS glitches,
           count(*) FILTER (WHERE s.is_implausible) AS implausible_steps
    FROM counter_steps('vehicle', %(device_id)s, %(from_ts)s, %(to_ts)s, %(max_power_kw)s) s
    GROUP BY 1
), stats AS (
    SELECT CASE WHEN %(daily)s THEN date_trunc('day', r.ts - interval '1 microsecond', %(tz)s)
                ELSE date_bin(%(stride)s, r.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
               AS bucket,
           count(*) AS readings,
           min(r.soc) AS soc_min, max(r.soc) AS soc_max, (array_agg(r.soc ORDER BY r.ts DESC))[1] AS soc_last,
           avg(r.battery_temp::numeric) AS battery_temp_avg, max(r.battery_temp) AS battery_temp_max
    FROM vehicle_readings r
    WHERE r.vehicle_id = %(device_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
    GROUP BY 1
)
SELECT stats.bucket, stats.readings, energy.energy_kwh, energy.counter_resets, energy.glitches,
       energy.implausible_steps, stats.soc_min, stats.soc_max, stats.soc_last, stats.battery_temp_avg,
       stats.battery_temp_max
FROM stats JOIN energy USING (bucket);

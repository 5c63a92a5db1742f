-- Energy per bucket of a device's readings in (from_ts, to_ts], with the counter flags: the sum of
-- the readings' counter_steps() contributions (sql/migrations/0008_counter_rules.sql), so that the
-- buckets of a window add up exactly to the window's analytics. Only buckets holding a reading.
-- Parameters: {kind} ('meter' | 'vehicle', composed in as a literal by web/history.py: a constant
-- kind drops the other kind's scans from the plan, which a bind parameter keeps in psycopg's
-- prepared generic plan: a fifth of the call's CPU), device_id, from_ts, to_ts, stride (interval),
-- daily (bool), tz (IANA name), max_power_kw (MAX_METER_POWER_KW or MAX_VEHICLE_POWER_KW).
-- A bucket is keyed by its start: the calendar day in tz when daily, else a multiple of stride since
-- the Unix epoch. Buckets are (start, end] like the analytics window, so ts minus one microsecond
-- (timestamptz's resolution) is what is binned; the *_bucket_stats.sql files bin the same way.
SELECT CASE WHEN %(daily)s THEN date_trunc('day', s.ts - interval '1 microsecond', %(tz)s)
            ELSE date_bin(%(stride)s, s.ts - interval '1 microsecond', timestamptz '1970-01-01 00:00+00') END
           AS bucket,
       sum(s.energy_kwh) AS energy_kwh,
       count(*) FILTER (WHERE s.is_reset) AS counter_resets,
       count(*) FILTER (WHERE s.is_glitch) AS glitches,
       count(*) FILTER (WHERE s.is_implausible) AS implausible_steps
FROM counter_steps({kind}, %(device_id)s, %(from_ts)s, %(to_ts)s, %(max_power_kw)s) s
GROUP BY 1;

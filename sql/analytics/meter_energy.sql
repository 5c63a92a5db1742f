-- AC energy drawn by the meter currently mapped to a vehicle over the window (from_ts, to_ts].
-- Parameters: vehicle_id, from_ts, to_ts, baseline_from.
--
-- Energy is the sum of the increases between consecutive readings in time order, starting from the
-- baseline: the last reading at or before from_ts (and after baseline_from, which bounds the search
-- so that partition pruning removes every older partition). A decrease is a counter reset: that
-- step adds nothing and counting continues from the new value. The primary key (meter_id, ts) makes
-- duplicates impossible and the ORDER BY ts makes arrival order irrelevant. Consecutive readings of
-- a counter are close, so each float step is exact (Sterbenz); the caller rounds the sum to 3 decimals.
--
-- The baseline is an index scan backwards over the partitions in ts order with LIMIT 1: Postgres
-- stops at the first partition that holds a reading, the older ones are never executed.
-- meter_id is NULL in the result when the vehicle has no mapping.
WITH mapped AS (
    SELECT meter_id FROM vehicle_meter_map WHERE vehicle_id = %(vehicle_id)s
), baseline AS (
    SELECT b.ts, b.kwh_consumed_ac AS kwh, false AS in_window
    FROM mapped m
    CROSS JOIN LATERAL (
        SELECT r.ts, r.kwh_consumed_ac
        FROM meter_readings r
        WHERE r.meter_id = m.meter_id AND r.ts <= %(from_ts)s AND r.ts > %(baseline_from)s
        ORDER BY r.ts DESC
        LIMIT 1
    ) b
), series AS (
    SELECT ts, kwh, in_window FROM baseline
    UNION ALL
    SELECT r.ts, r.kwh_consumed_ac, true
    FROM mapped m
    JOIN meter_readings r ON r.meter_id = m.meter_id
    WHERE r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
), steps AS (
    SELECT ts, in_window, kwh - lag(kwh) OVER (ORDER BY ts) AS step
    FROM series
)
SELECT (SELECT meter_id FROM mapped)                     AS meter_id,
       coalesce(sum(step) FILTER (WHERE step > 0), 0)    AS energy_kwh,
       count(*) FILTER (WHERE step < 0)                  AS counter_resets,
       count(*) FILTER (WHERE in_window)                 AS readings,
       min(ts) FILTER (WHERE NOT in_window)              AS baseline_ts
FROM steps;

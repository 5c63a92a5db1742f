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
-- stops at the first partition that holds a reading, the older ones are never executed. The
-- window's rows come out of the primary key in ts order too, so the window function needs no sort:
-- the baseline is not put in the same row set but given to lag() as the value before the first row.
-- meter_id is NULL in the result when the vehicle has no mapping.
WITH mapped AS (
    SELECT meter_id FROM vehicle_meter_map WHERE vehicle_id = %(vehicle_id)s
), baseline AS (
    SELECT r.ts, r.kwh_consumed_ac AS kwh
    FROM meter_readings r
    WHERE r.meter_id = (SELECT meter_id FROM mapped) AND r.ts <= %(from_ts)s AND r.ts > %(baseline_from)s
    ORDER BY r.ts DESC
    LIMIT 1
), steps AS (
    SELECT r.kwh_consumed_ac - lag(r.kwh_consumed_ac, 1, (SELECT kwh FROM baseline)) OVER (ORDER BY r.ts) AS step
    FROM meter_readings r
    WHERE r.meter_id = (SELECT meter_id FROM mapped) AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
)
SELECT (SELECT meter_id FROM mapped)                     AS meter_id,
       coalesce(sum(step) FILTER (WHERE step > 0), 0)    AS energy_kwh,
       count(*) FILTER (WHERE step < 0)                  AS counter_resets,
       count(*)                                          AS readings,
       (SELECT ts FROM baseline)                         AS baseline_ts
FROM steps;

-- AC energy drawn by the meter currently mapped to a vehicle over the window (from_ts, to_ts].
-- Parameters: vehicle_id, from_ts, to_ts, max_meter_power_kw.
--
-- Energy is the sum of the readings' contributions under the one counter rule set,
-- counter_steps() (sql/migrations/0008_counter_rules.sql): increases between consecutive readings
-- starting from the reading before the window; glitches, resets and implausible steps add nothing
-- and are counted. baseline_ts is the reading before the window that the count starts from.
-- meter_id is NULL in the result when the vehicle has no mapping. The meter id reaches
-- counter_steps() through a LATERAL join, not a subquery argument: Postgres inlines a set-returning
-- SQL function only when its arguments hold no subquery (a function scan plans all partitions).
WITH mapped AS (
    SELECT meter_id FROM vehicle_meter_map WHERE vehicle_id = %(vehicle_id)s
)
SELECT (SELECT meter_id FROM mapped)                           AS meter_id,
       coalesce(sum(s.energy_kwh), 0)                          AS energy_kwh,
       count(*) FILTER (WHERE s.is_reset)                      AS counter_resets,
       count(*) FILTER (WHERE s.is_glitch)                     AS glitches,
       count(*) FILTER (WHERE s.is_implausible)                AS implausible_steps,
       count(*)                                                AS readings,
       min(s.predecessor_ts) FILTER (WHERE s.predecessor_ts <= %(from_ts)s) AS baseline_ts
FROM mapped m
CROSS JOIN LATERAL counter_steps('meter', m.meter_id, %(from_ts)s, %(to_ts)s, %(max_meter_power_kw)s) s;

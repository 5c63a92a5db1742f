-- AC energy drawn by one meter over the window (from_ts, to_ts].
-- Parameters: meter_id, from_ts, to_ts, max_meter_power_kw.
--
-- Energy is the sum of the readings' contributions under the one counter rule set,
-- counter_steps() (sql/migrations/0008_counter_rules.sql): increases between consecutive readings
-- starting from the reading before the window; glitches, resets and implausible steps add nothing
-- and are counted. The sum is numeric (each contribution's float8 made exact decimal), so that it
-- equals the hourly rollups' sum of hours exactly (analytics/meter_window.sql). baseline_ts is the
-- reading before the window that the count starts from.
-- The caller looks the vehicle's meter up first (sql/mappings/by_vehicle.sql, on the primary) and
-- passes it as a parameter rather than a subquery: Postgres inlines the set-returning SQL function
-- only when its arguments hold no subquery, and on Citus a constant distribution column routes the
-- whole query to the one shard holding that meter (docs/citus.md).
SELECT %(meter_id)s::text                                      AS meter_id,
       coalesce(sum(s.energy_kwh::numeric), 0)                 AS energy_kwh,
       count(*) FILTER (WHERE s.is_reset)                      AS counter_resets,
       count(*) FILTER (WHERE s.is_glitch)                     AS glitches,
       count(*) FILTER (WHERE s.is_implausible)                AS implausible_steps,
       count(*)                                                AS readings,
       min(s.predecessor_ts) FILTER (WHERE s.predecessor_ts <= %(from_ts)s) AS baseline_ts
FROM counter_steps('meter', %(meter_id)s, %(from_ts)s, %(to_ts)s, %(max_meter_power_kw)s) s;

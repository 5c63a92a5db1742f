-- DC energy delivered into a vehicle's battery over the window (from_ts, to_ts] and its average
-- battery temperature, from the hourly rollups for the whole hours (whole_from, whole_to] and from
-- raw history, with the one counter rule set counter_steps(), for the edges (from_ts, whole_from]
-- and (whole_to, to_ts]. Equal to the raw computation (analytics/vehicle_energy.sql): contributions
-- never depend on the window, and every sum is numeric (exact, whatever the order of addition).
-- web/rollup_reads.py chooses whole_from <= whole_to on whole hours, and ends the whole hours before
-- the first hour the vehicle's pending marks may change (those are read raw).
-- Parameters: vehicle_id, from_ts, to_ts, whole_from, whole_to, max_vehicle_power_kw.
-- Same columns as analytics/vehicle_energy.sql (numeric energy and average, the same average expression).
WITH rolled AS (
    SELECT coalesce(sum(r.energy_kwh), 0)        AS energy_kwh,
           coalesce(sum(r.counter_resets), 0)    AS counter_resets,
           coalesce(sum(r.glitches), 0)          AS glitches,
           coalesce(sum(r.implausible_steps), 0) AS implausible_steps,
           coalesce(sum(r.readings), 0)          AS readings,
           min(r.first_predecessor_ts) FILTER (WHERE r.first_predecessor_ts <= %(from_ts)s) AS baseline_ts,
           coalesce(sum(r.battery_temp_sum), 0)  AS temp_sum
    FROM vehicle_hourly_rollups r
    WHERE r.vehicle_id = %(vehicle_id)s AND r.hour >= %(whole_from)s AND r.hour < %(whole_to)s
), edges AS (
    SELECT s.* FROM counter_steps('vehicle', %(vehicle_id)s, %(from_ts)s, %(whole_from)s, %(max_vehicle_power_kw)s) s
    UNION ALL
    SELECT s.* FROM counter_steps('vehicle', %(vehicle_id)s, %(whole_to)s, %(to_ts)s, %(max_vehicle_power_kw)s) s
), edge AS (
    SELECT coalesce(sum(e.energy_kwh::numeric), 0)  AS energy_kwh,
           count(*) FILTER (WHERE e.is_reset)       AS counter_resets,
           count(*) FILTER (WHERE e.is_glitch)      AS glitches,
           count(*) FILTER (WHERE e.is_implausible) AS implausible_steps,
           count(*)                                 AS readings,
           min(e.predecessor_ts) FILTER (WHERE e.predecessor_ts <= %(from_ts)s) AS baseline_ts
    FROM edges e
), edge_temps AS (
    SELECT coalesce(sum(t.battery_temp::numeric), 0) AS temp_sum FROM (
        SELECT r.battery_temp FROM vehicle_readings r
        WHERE r.vehicle_id = %(vehicle_id)s AND r.ts > %(from_ts)s AND r.ts <= %(whole_from)s
        UNION ALL
        SELECT r.battery_temp FROM vehicle_readings r
        WHERE r.vehicle_id = %(vehicle_id)s AND r.ts > %(whole_to)s AND r.ts <= %(to_ts)s
    ) t
)
SELECT rolled.energy_kwh + edge.energy_kwh                             AS energy_kwh,
       (rolled.counter_resets + edge.counter_resets)::int             AS counter_resets,
       (rolled.glitches + edge.glitches)::int                         AS glitches,
       (rolled.implausible_steps + edge.implausible_steps)::int       AS implausible_steps,
       (rolled.readings + edge.readings)::int                         AS readings,
       least(rolled.baseline_ts, edge.baseline_ts)                    AS baseline_ts,
       round(rolled.temp_sum + edge_temps.temp_sum, 30) / nullif(rolled.readings + edge.readings, 0)
                                                                      AS avg_battery_temp
FROM rolled, edge, edge_temps;

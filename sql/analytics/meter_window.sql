-- AC energy drawn by a meter over the window (from_ts, to_ts]: hourly rollups for the whole hours
-- (whole_from, whole_to], raw history through counter_steps() for the edges; the meter twin of
-- analytics/vehicle_window.sql (same reasoning). Parameters: meter_id, from_ts, to_ts, whole_from,
-- whole_to, max_meter_power_kw. Same columns as analytics/meter_energy.sql.
WITH rolled AS (
    SELECT coalesce(sum(r.energy_kwh), 0)        AS energy_kwh,
           coalesce(sum(r.counter_resets), 0)    AS counter_resets,
           coalesce(sum(r.glitches), 0)          AS glitches,
           coalesce(sum(r.implausible_steps), 0) AS implausible_steps,
           coalesce(sum(r.readings), 0)          AS readings,
           min(r.first_predecessor_ts) FILTER (WHERE r.first_predecessor_ts <= %(from_ts)s) AS baseline_ts
    FROM meter_hourly_rollups r
    WHERE r.meter_id = %(meter_id)s AND r.hour >= %(whole_from)s AND r.hour < %(whole_to)s
), edges AS (
    SELECT s.* FROM counter_steps('meter', %(meter_id)s, %(from_ts)s, %(whole_from)s, %(max_meter_power_kw)s) s
    UNION ALL
    SELECT s.* FROM counter_steps('meter', %(meter_id)s, %(whole_to)s, %(to_ts)s, %(max_meter_power_kw)s) s
), edge AS (
    SELECT coalesce(sum(e.energy_kwh::numeric), 0)  AS energy_kwh,
           count(*) FILTER (WHERE e.is_reset)       AS counter_resets,
           count(*) FILTER (WHERE e.is_glitch)      AS glitches,
           count(*) FILTER (WHERE e.is_implausible) AS implausible_steps,
           count(*)                                 AS readings,
           min(e.predecessor_ts) FILTER (WHERE e.predecessor_ts <= %(from_ts)s) AS baseline_ts
    FROM edges e
)
SELECT %(meter_id)s::text                                             AS meter_id,
       rolled.energy_kwh + edge.energy_kwh                            AS energy_kwh,
       (rolled.counter_resets + edge.counter_resets)::int             AS counter_resets,
       (rolled.glitches + edge.glitches)::int                         AS glitches,
       (rolled.implausible_steps + edge.implausible_steps)::int       AS implausible_steps,
       (rolled.readings + edge.readings)::int                         AS readings,
       least(rolled.baseline_ts, edge.baseline_ts)                    AS baseline_ts
FROM rolled, edge;

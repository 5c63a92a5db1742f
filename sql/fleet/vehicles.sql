-- Every mapped vehicle's figures over the whole hours (from_ts, to_ts], from the hourly rollups only
-- (the fleet endpoints: sql/fleet/summary.sql and ranking.sql wrap it; web/fleet.py). Parameters:
-- from_ts, to_ts (whole hours), last_hour (to_ts - 1 h, the window's last bucket), and v_first_hour,
-- v_last_hour, m_first_hour, m_last_hour (sql/fleet/anchors.sql, in the same snapshot).
-- Two rows per device whatever the window's length, its first and last inside the window: a window's
-- sum is the last row's prior sum plus its own value less the first row's prior sum (migration 0013).
-- In a fleet that reports every hour they are the rows of the window's first and last hours that hold
-- any row (of any device: the current hour may hold none yet), read by hour (one index range each,
-- hash-joined to the mapping); a device without a row in one of those hours looks for its first (last)
-- row in the window alone (joined, below; no device has a row before the first such hour or after the
-- last).
-- A vehicle whose meter or itself has no reading in the window gets zeros (and NULL baselines).
-- Energies and the temperature sum stay numeric (exact). ac_kwh, dc_kwh, ratio, avg_temp and warnings
-- are the figures as the API states them (web/analytics.py figures(): half up on the exact numeric),
-- so that the fleet sorts and counts them in SQL; the tests hold the two equal.
WITH v_at_first AS (
    SELECT r.vehicle_id, r.first_predecessor_ts, r.prior_readings AS readings, r.prior_energy_kwh AS energy_kwh,
           r.prior_counter_resets AS counter_resets, r.prior_glitches AS glitches,
           r.prior_implausible_steps AS implausible_steps, r.prior_battery_temp_sum AS temp_sum
    FROM vehicle_hourly_rollups r
    WHERE r.hour = %(v_first_hour)s::timestamptz
),
v_at_last AS (
    SELECT r.vehicle_id, r.prior_readings + r.readings AS readings, r.prior_energy_kwh + r.energy_kwh AS energy_kwh,
           r.prior_counter_resets + r.counter_resets AS counter_resets, r.prior_glitches + r.glitches AS glitches,
           r.prior_implausible_steps + r.implausible_steps AS implausible_steps,
           r.prior_battery_temp_sum + r.battery_temp_sum AS temp_sum
    FROM vehicle_hourly_rollups r
    WHERE r.hour = %(v_last_hour)s::timestamptz
),
m_at_first AS (
    SELECT r.meter_id, r.first_predecessor_ts, r.prior_readings AS readings, r.prior_energy_kwh AS energy_kwh,
           r.prior_counter_resets AS counter_resets, r.prior_glitches AS glitches,
           r.prior_implausible_steps AS implausible_steps
    FROM meter_hourly_rollups r
    WHERE r.hour = %(m_first_hour)s::timestamptz
),
m_at_last AS (
    SELECT r.meter_id, r.prior_readings + r.readings AS readings, r.prior_energy_kwh + r.energy_kwh AS energy_kwh,
           r.prior_counter_resets + r.counter_resets AS counter_resets, r.prior_glitches + r.glitches AS glitches,
           r.prior_implausible_steps + r.implausible_steps AS implausible_steps
    FROM meter_hourly_rollups r
    WHERE r.hour = %(m_last_hour)s::timestamptz
), joined AS (
    -- A device without a row in its kind's first (last) anchor hour looks for its first (last) row in
    -- the window: a subquery evaluated only for such a device (CASE), returning the whole row; a LATERAL
    -- join instead was re-scanned for every vehicle, present or not. OFFSET 0: evaluated once a
    -- vehicle, not once for each of its columns used below.
    SELECT map.vehicle_id, map.meter_id,
           vf.first_predecessor_ts AS vf_first_predecessor_ts, vf.readings AS vf_readings,
           vf.energy_kwh AS vf_energy_kwh, vf.counter_resets AS vf_counter_resets, vf.glitches AS vf_glitches,
           vf.implausible_steps AS vf_implausible_steps, vf.temp_sum AS vf_temp_sum,
           vl.readings AS vl_readings, vl.energy_kwh AS vl_energy_kwh, vl.counter_resets AS vl_counter_resets,
           vl.glitches AS vl_glitches, vl.implausible_steps AS vl_implausible_steps, vl.temp_sum AS vl_temp_sum,
           mf.first_predecessor_ts AS mf_first_predecessor_ts, mf.readings AS mf_readings,
           mf.energy_kwh AS mf_energy_kwh, mf.counter_resets AS mf_counter_resets, mf.glitches AS mf_glitches,
           mf.implausible_steps AS mf_implausible_steps,
           ml.readings AS ml_readings, ml.energy_kwh AS ml_energy_kwh, ml.counter_resets AS ml_counter_resets,
           ml.glitches AS ml_glitches, ml.implausible_steps AS ml_implausible_steps,
           CASE WHEN vf.vehicle_id IS NULL THEN (
               SELECT r FROM vehicle_hourly_rollups r WHERE r.vehicle_id = map.vehicle_id
                 AND r.hour > %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz
                 ORDER BY r.hour LIMIT 1) END AS vfx,
           CASE WHEN vl.vehicle_id IS NULL THEN (
               SELECT r FROM vehicle_hourly_rollups r WHERE r.vehicle_id = map.vehicle_id
                 AND r.hour >= %(from_ts)s::timestamptz AND r.hour < %(last_hour)s::timestamptz
                 ORDER BY r.hour DESC LIMIT 1) END AS vlx,
           CASE WHEN mf.meter_id IS NULL THEN (
               SELECT r FROM meter_hourly_rollups r WHERE r.meter_id = map.meter_id
                 AND r.hour > %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz
                 ORDER BY r.hour LIMIT 1) END AS mfx,
           CASE WHEN ml.meter_id IS NULL THEN (
               SELECT r FROM meter_hourly_rollups r WHERE r.meter_id = map.meter_id
                 AND r.hour >= %(from_ts)s::timestamptz AND r.hour < %(last_hour)s::timestamptz
                 ORDER BY r.hour DESC LIMIT 1) END AS mlx
    FROM vehicle_meter_map map
    LEFT JOIN v_at_first vf ON vf.vehicle_id = map.vehicle_id
    LEFT JOIN v_at_last vl ON vl.vehicle_id = map.vehicle_id
    LEFT JOIN m_at_first mf ON mf.meter_id = map.meter_id
    LEFT JOIN m_at_last ml ON ml.meter_id = map.meter_id
    OFFSET 0
), windows AS (
    SELECT j.vehicle_id, j.meter_id,
           coalesce(coalesce(j.ml_energy_kwh, ((j.mlx).prior_energy_kwh + (j.mlx).energy_kwh))
                    - coalesce(j.mf_energy_kwh, (j.mfx).prior_energy_kwh), 0) AS ac,
           coalesce(coalesce(j.ml_counter_resets, ((j.mlx).prior_counter_resets + (j.mlx).counter_resets))
                    - coalesce(j.mf_counter_resets, (j.mfx).prior_counter_resets), 0)::int AS m_resets,
           coalesce(coalesce(j.ml_glitches, ((j.mlx).prior_glitches + (j.mlx).glitches))
                    - coalesce(j.mf_glitches, (j.mfx).prior_glitches), 0)::int AS m_glitches,
           coalesce(coalesce(j.ml_implausible_steps, ((j.mlx).prior_implausible_steps + (j.mlx).implausible_steps))
                    - coalesce(j.mf_implausible_steps, (j.mfx).prior_implausible_steps), 0)::int AS m_implausible,
           coalesce(coalesce(j.ml_readings, ((j.mlx).prior_readings + (j.mlx).readings))
                    - coalesce(j.mf_readings, (j.mfx).prior_readings), 0)::int AS m_readings,
           CASE WHEN coalesce(j.mf_first_predecessor_ts, (j.mfx).first_predecessor_ts) <= %(from_ts)s::timestamptz
                THEN coalesce(j.mf_first_predecessor_ts, (j.mfx).first_predecessor_ts) END AS m_baseline,
           coalesce(coalesce(j.vl_energy_kwh, ((j.vlx).prior_energy_kwh + (j.vlx).energy_kwh))
                    - coalesce(j.vf_energy_kwh, (j.vfx).prior_energy_kwh), 0) AS dc,
           coalesce(coalesce(j.vl_counter_resets, ((j.vlx).prior_counter_resets + (j.vlx).counter_resets))
                    - coalesce(j.vf_counter_resets, (j.vfx).prior_counter_resets), 0)::int AS v_resets,
           coalesce(coalesce(j.vl_glitches, ((j.vlx).prior_glitches + (j.vlx).glitches))
                    - coalesce(j.vf_glitches, (j.vfx).prior_glitches), 0)::int AS v_glitches,
           coalesce(coalesce(j.vl_implausible_steps, ((j.vlx).prior_implausible_steps + (j.vlx).implausible_steps))
                    - coalesce(j.vf_implausible_steps, (j.vfx).prior_implausible_steps), 0)::int AS v_implausible,
           coalesce(coalesce(j.vl_readings, ((j.vlx).prior_readings + (j.vlx).readings))
                    - coalesce(j.vf_readings, (j.vfx).prior_readings), 0)::int AS v_readings,
           CASE WHEN coalesce(j.vf_first_predecessor_ts, (j.vfx).first_predecessor_ts) <= %(from_ts)s::timestamptz
                THEN coalesce(j.vf_first_predecessor_ts, (j.vfx).first_predecessor_ts) END AS v_baseline,
           coalesce(coalesce(j.vl_temp_sum, ((j.vlx).prior_battery_temp_sum + (j.vlx).battery_temp_sum))
                    - coalesce(j.vf_temp_sum, (j.vfx).prior_battery_temp_sum), 0) AS temp_sum
    FROM joined j
), rounded AS (
    SELECT a.*, round(a.ac, 3) AS ac_kwh, round(a.dc, 3) AS dc_kwh, round(a.avg_quotient, 3) AS avg_temp
    FROM (
        -- The per-vehicle queries' average expression (analytics/vehicle_energy.sql): one quotient.
        SELECT w.*, CASE WHEN w.v_readings > 0 THEN round(w.temp_sum, 30) / w.v_readings END AS avg_quotient
        FROM windows w
    ) a
), rated AS (
    -- round(dc_kwh, 20): the quotient to 20 decimals, far below the 1e-16 that separates it from a tie
    -- (web/analytics.py efficiency()).
    SELECT r.*, CASE WHEN r.ac_kwh <> 0 THEN round(round(r.dc_kwh, 20) / r.ac_kwh, 4) END AS ratio
    FROM rounded r
)
SELECT r.*,
       coalesce((r.ratio > 1)::int, 0) + (r.ac_kwh = 0 AND r.dc_kwh <> 0)::int
       + (r.m_resets > 0)::int + (r.m_glitches > 0)::int + (r.m_implausible > 0)::int
       + (r.v_resets > 0)::int + (r.v_glitches > 0)::int + (r.v_implausible > 0)::int AS warnings
FROM rated r

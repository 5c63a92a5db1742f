-- Every mapped vehicle's figures over the whole hours (from_ts, to_ts], from the hourly rollups only
-- (the fleet endpoints: sql/fleet/summary.sql and ranking.sql wrap it; web/fleet.py). Parameters:
-- from_ts, to_ts (whole hours), last_hour (to_ts - 1 h, the window's last bucket), and v_first_hour,
-- v_last_hour, m_first_hour, m_last_hour (sql/fleet/anchors.sql, in the same snapshot).
-- Two rows per device whatever the window's length, its first and last inside the window: a window's
-- sum is the last row's prior sum plus its own value less the first row's prior sum (migration 0013).
-- In a fleet that reports every hour they are the rows of the window's first and last hours that hold
-- any row (of any device: the current hour may hold none yet), read by hour (one index range each,
-- hash-joined to the mapping); a device without a row in one of those hours looks for its first (last)
-- row in the window alone (the LATERAL lookups, skipped otherwise; no device has a row before the first
-- such hour or after the last).
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
), windows AS (
    SELECT map.vehicle_id, map.meter_id,
           coalesce(coalesce(ml.energy_kwh, mlx.energy_kwh) - coalesce(mf.energy_kwh, mfx.energy_kwh), 0) AS ac,
           coalesce(coalesce(ml.counter_resets, mlx.counter_resets)
                    - coalesce(mf.counter_resets, mfx.counter_resets), 0)::int AS m_resets,
           coalesce(coalesce(ml.glitches, mlx.glitches) - coalesce(mf.glitches, mfx.glitches), 0)::int AS m_glitches,
           coalesce(coalesce(ml.implausible_steps, mlx.implausible_steps)
                    - coalesce(mf.implausible_steps, mfx.implausible_steps), 0)::int AS m_implausible,
           coalesce(coalesce(ml.readings, mlx.readings) - coalesce(mf.readings, mfx.readings), 0)::int AS m_readings,
           CASE WHEN coalesce(mf.first_predecessor_ts, mfx.first_predecessor_ts) <= %(from_ts)s::timestamptz
                THEN coalesce(mf.first_predecessor_ts, mfx.first_predecessor_ts) END AS m_baseline,
           coalesce(coalesce(vl.energy_kwh, vlx.energy_kwh) - coalesce(vf.energy_kwh, vfx.energy_kwh), 0) AS dc,
           coalesce(coalesce(vl.counter_resets, vlx.counter_resets)
                    - coalesce(vf.counter_resets, vfx.counter_resets), 0)::int AS v_resets,
           coalesce(coalesce(vl.glitches, vlx.glitches) - coalesce(vf.glitches, vfx.glitches), 0)::int AS v_glitches,
           coalesce(coalesce(vl.implausible_steps, vlx.implausible_steps)
                    - coalesce(vf.implausible_steps, vfx.implausible_steps), 0)::int AS v_implausible,
           coalesce(coalesce(vl.readings, vlx.readings) - coalesce(vf.readings, vfx.readings), 0)::int AS v_readings,
           CASE WHEN coalesce(vf.first_predecessor_ts, vfx.first_predecessor_ts) <= %(from_ts)s::timestamptz
                THEN coalesce(vf.first_predecessor_ts, vfx.first_predecessor_ts) END AS v_baseline,
           coalesce(coalesce(vl.temp_sum, vlx.temp_sum) - coalesce(vf.temp_sum, vfx.temp_sum), 0) AS temp_sum
    FROM vehicle_meter_map map
    LEFT JOIN v_at_first vf ON vf.vehicle_id = map.vehicle_id
    LEFT JOIN v_at_last vl ON vl.vehicle_id = map.vehicle_id
    LEFT JOIN m_at_first mf ON mf.meter_id = map.meter_id
    LEFT JOIN m_at_last ml ON ml.meter_id = map.meter_id
    LEFT JOIN LATERAL (
        SELECT r.first_predecessor_ts, r.prior_readings AS readings, r.prior_energy_kwh AS energy_kwh,
           r.prior_counter_resets AS counter_resets, r.prior_glitches AS glitches,
               r.prior_implausible_steps AS implausible_steps, r.prior_battery_temp_sum AS temp_sum
        FROM vehicle_hourly_rollups r
        WHERE vf.vehicle_id IS NULL AND r.vehicle_id = map.vehicle_id
          AND r.hour > %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz
        ORDER BY r.hour LIMIT 1
    ) vfx ON true
    LEFT JOIN LATERAL (
        SELECT r.prior_readings + r.readings AS readings, r.prior_energy_kwh + r.energy_kwh AS energy_kwh,
               r.prior_counter_resets + r.counter_resets AS counter_resets, r.prior_glitches + r.glitches AS glitches,
               r.prior_implausible_steps + r.implausible_steps AS implausible_steps,
               r.prior_battery_temp_sum + r.battery_temp_sum AS temp_sum
        FROM vehicle_hourly_rollups r
        WHERE vl.vehicle_id IS NULL AND r.vehicle_id = map.vehicle_id
          AND r.hour >= %(from_ts)s::timestamptz AND r.hour < %(last_hour)s::timestamptz
        ORDER BY r.hour DESC LIMIT 1
    ) vlx ON true
    LEFT JOIN LATERAL (
        SELECT r.first_predecessor_ts, r.prior_readings AS readings, r.prior_energy_kwh AS energy_kwh,
           r.prior_counter_resets AS counter_resets, r.prior_glitches AS glitches,
               r.prior_implausible_steps AS implausible_steps
        FROM meter_hourly_rollups r
        WHERE mf.meter_id IS NULL AND r.meter_id = map.meter_id
          AND r.hour > %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz
        ORDER BY r.hour LIMIT 1
    ) mfx ON true
    LEFT JOIN LATERAL (
        SELECT r.prior_readings + r.readings AS readings, r.prior_energy_kwh + r.energy_kwh AS energy_kwh,
               r.prior_counter_resets + r.counter_resets AS counter_resets, r.prior_glitches + r.glitches AS glitches,
               r.prior_implausible_steps + r.implausible_steps AS implausible_steps
        FROM meter_hourly_rollups r
        WHERE ml.meter_id IS NULL AND r.meter_id = map.meter_id
          AND r.hour >= %(from_ts)s::timestamptz AND r.hour < %(last_hour)s::timestamptz
        ORDER BY r.hour DESC LIMIT 1
    ) mlx ON true
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

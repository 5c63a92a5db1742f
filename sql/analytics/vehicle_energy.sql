-- DC energy delivered into a vehicle's battery over the window (from_ts, to_ts], and its average
-- battery temperature. Parameters: vehicle_id, from_ts, to_ts, baseline_from.
--
-- Same counter rules as meter_energy.sql: the sum of the increases between consecutive readings in
-- time order, starting from the baseline (the last reading at or before from_ts, searched back to
-- baseline_from only); a decrease is a reset that adds nothing. The average temperature covers the
-- readings inside the window only, not the baseline.
WITH baseline AS (
    SELECT r.ts, r.kwh_delivered_dc AS kwh, NULL::double precision AS battery_temp, false AS in_window
    FROM vehicle_readings r
    WHERE r.vehicle_id = %(vehicle_id)s AND r.ts <= %(from_ts)s AND r.ts > %(baseline_from)s
    ORDER BY r.ts DESC
    LIMIT 1
), series AS (
    SELECT ts, kwh, battery_temp, in_window FROM baseline
    UNION ALL
    SELECT r.ts, r.kwh_delivered_dc, r.battery_temp, true
    FROM vehicle_readings r
    WHERE r.vehicle_id = %(vehicle_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
), steps AS (
    SELECT ts, in_window, battery_temp, kwh - lag(kwh) OVER (ORDER BY ts) AS step
    FROM series
)
SELECT coalesce(sum(step) FILTER (WHERE step > 0), 0)     AS energy_kwh,
       count(*) FILTER (WHERE step < 0)                   AS counter_resets,
       count(*) FILTER (WHERE in_window)                  AS readings,
       min(ts) FILTER (WHERE NOT in_window)               AS baseline_ts,
       avg(battery_temp) FILTER (WHERE in_window) AS avg_battery_temp
FROM steps;

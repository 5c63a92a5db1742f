-- DC energy delivered into a vehicle's battery over the window (from_ts, to_ts], and its average
-- battery temperature. Parameters: vehicle_id, from_ts, to_ts, baseline_from.
--
-- Same counter rules as meter_energy.sql: the sum of the increases between consecutive readings in
-- time order, starting from the baseline (the last reading at or before from_ts, searched back to
-- baseline_from only); a decrease is a reset that adds nothing. The average temperature covers the
-- readings inside the window only, not the baseline.
--
-- The window's rows come out of the primary key in ts order partition after partition, so the
-- window function needs no sort: the baseline is not put in the same row set but given to lag() as
-- the value before the first row.
WITH baseline AS (
    SELECT r.ts, r.kwh_delivered_dc AS kwh
    FROM vehicle_readings r
    WHERE r.vehicle_id = %(vehicle_id)s AND r.ts <= %(from_ts)s AND r.ts > %(baseline_from)s
    ORDER BY r.ts DESC
    LIMIT 1
), steps AS (
    SELECT r.battery_temp,
           r.kwh_delivered_dc - lag(r.kwh_delivered_dc, 1, (SELECT kwh FROM baseline)) OVER (ORDER BY r.ts) AS step
    FROM vehicle_readings r
    WHERE r.vehicle_id = %(vehicle_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s
)
SELECT coalesce(sum(step) FILTER (WHERE step > 0), 0)     AS energy_kwh,
       count(*) FILTER (WHERE step < 0)                   AS counter_resets,
       count(*)                                           AS readings,
       (SELECT ts FROM baseline)                          AS baseline_ts,
       avg(battery_temp)                                  AS avg_battery_temp
FROM steps;

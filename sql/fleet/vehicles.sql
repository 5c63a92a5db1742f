-- Every mapped vehicle's figures over the whole hours (from_ts, to_ts], from the hourly rollups only
-- (the fleet endpoints; web/fleet.py). Parameters: from_ts, to_ts (whole hours).
-- Energies and the temperature sum stay numeric (exact): web/fleet.py adds them up for the fleet.
-- A vehicle whose meter or itself has no reading in the window gets zeros (and NULL baselines).
WITH v AS (
    SELECT vehicle_id, sum(readings) AS readings, sum(energy_kwh) AS energy_kwh,
           sum(counter_resets) AS counter_resets, sum(glitches) AS glitches,
           sum(implausible_steps) AS implausible_steps,
           min(first_predecessor_ts) FILTER (WHERE first_predecessor_ts <= %(from_ts)s) AS baseline_ts,
           sum(battery_temp_sum) AS temp_sum
    FROM vehicle_hourly_rollups
    WHERE hour >= %(from_ts)s AND hour < %(to_ts)s
    GROUP BY vehicle_id
), m AS (
    SELECT meter_id, sum(readings) AS readings, sum(energy_kwh) AS energy_kwh,
           sum(counter_resets) AS counter_resets, sum(glitches) AS glitches,
           sum(implausible_steps) AS implausible_steps,
           min(first_predecessor_ts) FILTER (WHERE first_predecessor_ts <= %(from_ts)s) AS baseline_ts
    FROM meter_hourly_rollups
    WHERE hour >= %(from_ts)s AND hour < %(to_ts)s
    GROUP BY meter_id
)
SELECT map.vehicle_id, map.meter_id,
       coalesce(m.energy_kwh, 0), coalesce(m.counter_resets, 0)::int, coalesce(m.glitches, 0)::int,
       coalesce(m.implausible_steps, 0)::int, coalesce(m.readings, 0)::int, m.baseline_ts,
       coalesce(v.energy_kwh, 0), coalesce(v.counter_resets, 0)::int, coalesce(v.glitches, 0)::int,
       coalesce(v.implausible_steps, 0)::int, coalesce(v.readings, 0)::int, v.baseline_ts,
       coalesce(v.temp_sum, 0)
FROM vehicle_meter_map map
LEFT JOIN v ON v.vehicle_id = map.vehicle_id
LEFT JOIN m ON m.meter_id = map.meter_id
ORDER BY map.vehicle_id;

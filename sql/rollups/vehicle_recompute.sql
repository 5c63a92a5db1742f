-- Recompute vehicles' rollup rows of the buckets from_hour .. to_hour from raw history, with the one
-- counter rule set, counter_steps() (sql/migrations/0008_counter_rules.sql): the late path of the
-- maintenance job (a reading older than what the rollups hold) and the rebuild. Runs after
-- rollups/delete_hours.sql in the same transaction. Parameters: device_ids, from_hours, to_hours
-- (arrays, one element per device), max_power_kw (MAX_VEHICLE_POWER_KW).
-- Energy per bucket from counter_steps(); the other statistics from one range scan of the device's
-- readings (a lookup per reading cost a partition pruning each).
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_hours)s::timestamptz[], %(to_hours)s::timestamptz[])
        AS d(vehicle_id, from_hour, to_hour)
), energy AS (
    SELECT d.vehicle_id, rollup_hour(s.ts) AS hour, count(*) AS readings, sum(s.energy_kwh::numeric) AS energy_kwh,
           count(*) FILTER (WHERE s.is_reset) AS counter_resets, count(*) FILTER (WHERE s.is_glitch) AS glitches,
           count(*) FILTER (WHERE s.is_implausible) AS implausible_steps,
           min(s.ts) AS first_ts, (array_agg(s.kwh ORDER BY s.ts))[1] AS first_kwh,
           (array_agg(s.predecessor_ts ORDER BY s.ts))[1] AS first_predecessor_ts,
           max(s.ts) AS last_ts, (array_agg(s.kwh ORDER BY s.ts DESC))[1] AS last_kwh,
           (array_agg(s.energy_kwh::numeric ORDER BY s.ts DESC))[1] AS last_energy_kwh,
           (array_agg(s.is_reset ORDER BY s.ts DESC))[1] AS last_is_reset,
           (array_agg(s.is_glitch ORDER BY s.ts DESC))[1] AS last_is_glitch,
           (array_agg(s.is_implausible ORDER BY s.ts DESC))[1] AS last_is_implausible
    FROM devices d
    CROSS JOIN LATERAL counter_steps('vehicle', d.vehicle_id, d.from_hour, counter_shift(d.to_hour, 1),
                                     %(max_power_kw)s) s
    GROUP BY 1, 2
), stats AS (
    SELECT d.vehicle_id, rollup_hour(r.ts) AS hour, sum(r.battery_temp::numeric) AS battery_temp_sum, max(r.battery_temp) AS battery_temp_max, min(r.soc) AS soc_min, max(r.soc) AS soc_max, (array_agg(r.soc ORDER BY r.ts DESC))[1] AS soc_last
    FROM devices d
    JOIN vehicle_readings r ON r.vehicle_id = d.vehicle_id AND r.ts > d.from_hour AND r.ts <= counter_shift(d.to_hour, 1)
    GROUP BY 1, 2
)
INSERT INTO vehicle_hourly_rollups (
    vehicle_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, battery_temp_sum, battery_temp_max, soc_min, soc_max, soc_last)
SELECT e.vehicle_id, e.hour, e.readings, e.energy_kwh, e.counter_resets, e.glitches, e.implausible_steps,
       e.first_ts, e.first_kwh, e.first_predecessor_ts, e.last_ts, e.last_kwh, e.last_energy_kwh, e.last_is_reset,
       e.last_is_glitch, e.last_is_implausible, t.battery_temp_sum, t.battery_temp_max, t.soc_min, t.soc_max, t.soc_last
FROM energy e
JOIN stats t ON t.vehicle_id = e.vehicle_id AND t.hour = e.hour
-- Hour by hour: the fleet reads every device's row of one hour (sql/fleet/vehicles.sql), which then
-- sit on few pages instead of one page each (a rebuild goes device by device).
ORDER BY e.hour, e.vehicle_id;

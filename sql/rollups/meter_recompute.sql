-- Recompute meters' rollup rows of the buckets from_hour .. to_hour from raw history, with the one
-- counter rule set, counter_steps(); the meter twin of rollups/vehicle_recompute.sql (same
-- parameters, max_power_kw is MAX_METER_POWER_KW).
-- Energy per bucket from counter_steps(); the other statistics from one range scan of the device's
-- readings (a lookup per reading cost a partition pruning each).
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_hours)s::timestamptz[], %(to_hours)s::timestamptz[])
        AS d(meter_id, from_hour, to_hour)
), energy AS (
    SELECT d.meter_id, rollup_hour(s.ts) AS hour, count(*) AS readings, sum(s.energy_kwh::numeric) AS energy_kwh,
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
    CROSS JOIN LATERAL counter_steps('meter', d.meter_id, d.from_hour, counter_shift(d.to_hour, 1),
                                     %(max_power_kw)s) s
    GROUP BY 1, 2
), stats AS (
    SELECT d.meter_id, rollup_hour(r.ts) AS hour, sum(r.voltage::numeric) AS voltage_sum, min(r.voltage) AS voltage_min, max(r.voltage) AS voltage_max
    FROM devices d
    JOIN meter_readings r ON r.meter_id = d.meter_id AND r.ts > d.from_hour AND r.ts <= counter_shift(d.to_hour, 1)
    GROUP BY 1, 2
)
INSERT INTO meter_hourly_rollups (
    meter_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, voltage_sum, voltage_min, voltage_max)
SELECT e.meter_id, e.hour, e.readings, e.energy_kwh, e.counter_resets, e.glitches, e.implausible_steps,
       e.first_ts, e.first_kwh, e.first_predecessor_ts, e.last_ts, e.last_kwh, e.last_energy_kwh, e.last_is_reset,
       e.last_is_glitch, e.last_is_implausible, t.voltage_sum, t.voltage_min, t.voltage_max
FROM energy e
JOIN stats t ON t.meter_id = e.meter_id AND t.hour = e.hour
-- Hour by hour: the fleet reads every device's row of one hour (sql/fleet/vehicles.sql), which then
-- sit on few pages instead of one page each (a rebuild goes device by device).
ORDER BY e.hour, e.meter_id;

-- Recompute meters' rollup rows of the buckets from_hour .. to_hour from raw history, with the one
-- counter rule set, counter_steps(); the meter twin of rollups/vehicle_recompute.sql (same
-- parameters, max_power_kw is MAX_METER_POWER_KW).
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_hours)s::timestamptz[], %(to_hours)s::timestamptz[])
        AS d(meter_id, from_hour, to_hour)
), steps AS (
    SELECT d.meter_id, s.ts, s.kwh, s.energy_kwh::numeric AS energy, s.is_reset, s.is_glitch, s.is_implausible,
           s.predecessor_ts, rollup_hour(s.ts) AS hour
    FROM devices d
    CROSS JOIN LATERAL counter_steps('meter', d.meter_id, d.from_hour, counter_shift(d.to_hour, 1),
                                     %(max_power_kw)s) s
), readings AS (
    SELECT s.*, r.voltage
    FROM steps s
    JOIN meter_readings r ON r.meter_id = s.meter_id AND r.ts = s.ts
)
INSERT INTO meter_hourly_rollups (
    meter_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, voltage_sum, voltage_min, voltage_max)
SELECT meter_id, hour, count(*), sum(energy),
       count(*) FILTER (WHERE is_reset), count(*) FILTER (WHERE is_glitch), count(*) FILTER (WHERE is_implausible),
       min(ts), (array_agg(kwh ORDER BY ts))[1], (array_agg(predecessor_ts ORDER BY ts))[1],
       max(ts), (array_agg(kwh ORDER BY ts DESC))[1], (array_agg(energy ORDER BY ts DESC))[1],
       (array_agg(is_reset ORDER BY ts DESC))[1], (array_agg(is_glitch ORDER BY ts DESC))[1],
       (array_agg(is_implausible ORDER BY ts DESC))[1],
       sum(voltage::numeric), min(voltage), max(voltage)
FROM readings
GROUP BY meter_id, hour;

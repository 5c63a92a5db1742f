-- The in-order path of the maintenance job for meters; the twin of rollups/vehicle_append.sql (same
-- parameters and reasoning, max_power_kw is MAX_METER_POWER_KW).
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_ts)s::timestamptz[], %(to_ts)s::timestamptz[],
                         %(frontier_ts)s::timestamptz[])
        AS d(meter_id, from_ts, to_ts, frontier_ts)
), steps AS (
    SELECT d.meter_id, s.ts, s.kwh, s.energy_kwh::numeric AS energy, s.is_reset, s.is_glitch, s.is_implausible,
           s.predecessor_ts, rollup_hour(s.ts) AS hour, (d.frontier_ts IS NULL OR s.ts > d.frontier_ts) AS is_new
    FROM devices d
    CROSS JOIN LATERAL counter_steps('meter', d.meter_id, d.from_ts, d.to_ts, %(max_power_kw)s) s
), readings AS (
    SELECT s.*, r.voltage
    FROM steps s
    JOIN meter_readings r ON r.meter_id = s.meter_id AND r.ts = s.ts
)
INSERT INTO meter_hourly_rollups AS r (
    meter_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, voltage_sum, voltage_min, voltage_max)
SELECT meter_id, hour, count(*) FILTER (WHERE is_new), sum(energy),
       count(*) FILTER (WHERE is_reset), count(*) FILTER (WHERE is_glitch), count(*) FILTER (WHERE is_implausible),
       min(ts), (array_agg(kwh ORDER BY ts))[1], (array_agg(predecessor_ts ORDER BY ts))[1],
       max(ts), (array_agg(kwh ORDER BY ts DESC))[1], (array_agg(energy ORDER BY ts DESC))[1],
       (array_agg(is_reset ORDER BY ts DESC))[1], (array_agg(is_glitch ORDER BY ts DESC))[1],
       (array_agg(is_implausible ORDER BY ts DESC))[1],
       coalesce(sum(voltage::numeric) FILTER (WHERE is_new), 0), min(voltage), max(voltage)
FROM readings
GROUP BY meter_id, hour
ON CONFLICT (meter_id, hour) DO UPDATE SET
    readings = r.readings + EXCLUDED.readings,
    energy_kwh = r.energy_kwh - r.last_energy_kwh + EXCLUDED.energy_kwh,
    counter_resets = r.counter_resets - r.last_is_reset::int + EXCLUDED.counter_resets,
    glitches = r.glitches - r.last_is_glitch::int + EXCLUDED.glitches,
    implausible_steps = r.implausible_steps - r.last_is_implausible::int + EXCLUDED.implausible_steps,
    last_ts = EXCLUDED.last_ts,
    last_kwh = EXCLUDED.last_kwh,
    last_energy_kwh = EXCLUDED.last_energy_kwh,
    last_is_reset = EXCLUDED.last_is_reset,
    last_is_glitch = EXCLUDED.last_is_glitch,
    last_is_implausible = EXCLUDED.last_is_implausible,
    voltage_sum = r.voltage_sum + EXCLUDED.voltage_sum,
    voltage_min = least(r.voltage_min, EXCLUDED.voltage_min),
    voltage_max = greatest(r.voltage_max, EXCLUDED.voltage_max);

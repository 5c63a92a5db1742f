-- The in-order path of the maintenance job: fold vehicles' new readings, all newer than the last
-- reading their rollups hold (the frontier), into the rollups, reading only the raw readings around
-- them. Parameters: device_ids, from_ts, to_ts, frontier_ts (arrays, one element per device),
-- max_power_kw (MAX_VEHICLE_POWER_KW).
-- from_ts is just before the frontier reading (or before the first new reading when the device has
-- no rollup yet), to_ts the newest new reading. counter_steps() judges the frontier reading again
-- (its next reading has come: a last drop may now be a glitch) and the new ones; the frontier's row
-- takes off the frontier reading's stored contribution (last_*) and adds the new judgement, its
-- statistics add only the new readings; the later hours are new rows.
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_ts)s::timestamptz[], %(to_ts)s::timestamptz[],
                         %(frontier_ts)s::timestamptz[])
        AS d(vehicle_id, from_ts, to_ts, frontier_ts)
), steps AS (
    SELECT d.vehicle_id, s.ts, s.kwh, s.energy_kwh::numeric AS energy, s.is_reset, s.is_glitch, s.is_implausible,
           s.predecessor_ts, rollup_hour(s.ts) AS hour, (d.frontier_ts IS NULL OR s.ts > d.frontier_ts) AS is_new
    FROM devices d
    CROSS JOIN LATERAL counter_steps('vehicle', d.vehicle_id, d.from_ts, d.to_ts, %(max_power_kw)s) s
), readings AS (
    SELECT s.*, r.soc, r.battery_temp
    FROM steps s
    JOIN vehicle_readings r ON r.vehicle_id = s.vehicle_id AND r.ts = s.ts
)
INSERT INTO vehicle_hourly_rollups AS r (
    vehicle_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, battery_temp_sum, battery_temp_max, soc_min, soc_max, soc_last)
SELECT vehicle_id, hour, count(*) FILTER (WHERE is_new), sum(energy),
       count(*) FILTER (WHERE is_reset), count(*) FILTER (WHERE is_glitch), count(*) FILTER (WHERE is_implausible),
       min(ts), (array_agg(kwh ORDER BY ts))[1], (array_agg(predecessor_ts ORDER BY ts))[1],
       max(ts), (array_agg(kwh ORDER BY ts DESC))[1], (array_agg(energy ORDER BY ts DESC))[1],
       (array_agg(is_reset ORDER BY ts DESC))[1], (array_agg(is_glitch ORDER BY ts DESC))[1],
       (array_agg(is_implausible ORDER BY ts DESC))[1],
       coalesce(sum(battery_temp::numeric) FILTER (WHERE is_new), 0), max(battery_temp), min(soc), max(soc),
       (array_agg(soc ORDER BY ts DESC))[1]
FROM readings
GROUP BY vehicle_id, hour
ON CONFLICT (vehicle_id, hour) DO UPDATE SET
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
    battery_temp_sum = r.battery_temp_sum + EXCLUDED.battery_temp_sum,
    battery_temp_max = greatest(r.battery_temp_max, EXCLUDED.battery_temp_max),
    soc_min = least(r.soc_min, EXCLUDED.soc_min),
    soc_max = greatest(r.soc_max, EXCLUDED.soc_max),
    soc_last = EXCLUDED.soc_last;

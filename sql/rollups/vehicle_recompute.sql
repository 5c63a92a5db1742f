-- Recompute vehicles' rollup rows of the buckets from_hour .. to_hour from raw history, with the one
-- counter rule set, counter_steps() (sql/migrations/0008_counter_rules.sql): the late path of the
-- maintenance job (a reading older than what the rollups hold) and the rebuild. Runs after
-- rollups/delete_hours.sql in the same transaction. Parameters: device_ids, from_hours, to_hours
-- (arrays, one element per device), max_power_kw (MAX_VEHICLE_POWER_KW).
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_hours)s::timestamptz[], %(to_hours)s::timestamptz[])
        AS d(vehicle_id, from_hour, to_hour)
), steps AS (
    SELECT d.vehicle_id, s.ts, s.kwh, s.energy_kwh::numeric AS energy, s.is_reset, s.is_glitch, s.is_implausible,
           s.predecessor_ts, rollup_hour(s.ts) AS hour
    FROM devices d
    CROSS JOIN LATERAL counter_steps('vehicle', d.vehicle_id, d.from_hour, counter_shift(d.to_hour, 1),
                                     %(max_power_kw)s) s
), readings AS (
    SELECT s.*, r.soc, r.battery_temp
    FROM steps s
    JOIN vehicle_readings r ON r.vehicle_id = s.vehicle_id AND r.ts = s.ts
)
INSERT INTO vehicle_hourly_rollups (
    vehicle_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, battery_temp_sum, battery_temp_max, soc_min, soc_max, soc_last)
SELECT vehicle_id, hour, count(*), sum(energy),
       count(*) FILTER (WHERE is_reset), count(*) FILTER (WHERE is_glitch), count(*) FILTER (WHERE is_implausible),
       min(ts), (array_agg(kwh ORDER BY ts))[1], (array_agg(predecessor_ts ORDER BY ts))[1],
       max(ts), (array_agg(kwh ORDER BY ts DESC))[1], (array_agg(energy ORDER BY ts DESC))[1],
       (array_agg(is_reset ORDER BY ts DESC))[1], (array_agg(is_glitch ORDER BY ts DESC))[1],
       (array_agg(is_implausible ORDER BY ts DESC))[1],
       sum(battery_temp::numeric), max(battery_temp), min(soc), max(soc), (array_agg(soc ORDER BY ts DESC))[1]
FROM readings
GROUP BY vehicle_id, hour;

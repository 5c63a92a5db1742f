-- The in-order path of the maintenance job: fold vehicles' new readings, all newer than the last
-- reading their rollups hold (the frontier), into the rollups, reading only the raw readings around
-- them. Parameters: device_ids, from_ts, to_ts, frontier_ts (arrays, one element per device),
-- max_power_kw (MAX_VEHICLE_POWER_KW), earliest_from and latest_to (min(from_ts), max(to_ts): plain
-- values, so partitions are pruned once for the batch), known_ids, known_ts, known_kwh (the 2
-- readings before each device's frontier from rollup_tails, one element per reading; NULL for a
-- batch of devices without a tail, whose look before then reads raw history). One
-- counter_steps_batch() call (migration 0012, counter_steps() for many devices) judges the batch.
-- The devices' newest readings and their 2 predecessors become their rollup_tails rows (0012).
-- from_ts is just before the frontier reading (or before the first new reading when the device has
-- no rollup yet), to_ts the newest new reading. counter_steps() judges the frontier reading again
-- (its next reading has come: a last drop may now be a glitch) and the new ones; the frontier's row
-- takes off the frontier reading's stored contribution (last_*) and adds the new judgement, its
-- statistics add only the new readings; the later hours are new rows.
-- Statistics from one range scan of the new readings (frontier_ts, to_ts] per device; a frontier row
-- that gets no new reading keeps its statistics (neutral values: 0, +/-Infinity).
-- Prior sums (migration 0013) of the new hours' rows: the frontier row's prior sums and its figures
-- as this statement leaves them (less its last reading's old contribution, plus the new rows before
-- them in hour order); the frontier row's own prior sums do not change (the rows before it did not).
-- A device without a frontier row (no rollup within 170 h) gets NULL ones, which
-- rollups/*_cumulative.sql fills in the same transaction.
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_ts)s::timestamptz[], %(to_ts)s::timestamptz[],
                         %(frontier_ts)s::timestamptz[])
        AS d(vehicle_id, from_ts, to_ts, frontier_ts)
), steps AS (
    SELECT * FROM counter_steps_batch('vehicle', %(device_ids)s::text[], %(from_ts)s::timestamptz[],
                                      %(to_ts)s::timestamptz[], %(earliest_from)s::timestamptz,
                                      %(latest_to)s::timestamptz, %(max_power_kw)s, false,
                                      %(known_ids)s::text[], %(known_ts)s::timestamptz[],
                                      %(known_kwh)s::double precision[])
), tails AS (
    INSERT INTO rollup_tails AS t (kind, device_id, last_ts, prev_ts, prev_kwh, prev2_ts, prev2_kwh)
    SELECT DISTINCT ON (s.device_id) 'vehicle', s.device_id, s.ts, s.prev_ts, s.prev_kwh, s.prev2_ts, s.prev2_kwh
    FROM steps s
    ORDER BY s.device_id, s.ts DESC
    ON CONFLICT (kind, device_id) DO UPDATE SET
        last_ts = EXCLUDED.last_ts, prev_ts = EXCLUDED.prev_ts, prev_kwh = EXCLUDED.prev_kwh,
        prev2_ts = EXCLUDED.prev2_ts, prev2_kwh = EXCLUDED.prev2_kwh
), energy AS (
    SELECT d.vehicle_id, rollup_hour(s.ts) AS hour,
           count(*) FILTER (WHERE d.frontier_ts IS NULL OR s.ts > d.frontier_ts) AS readings,
           sum(s.energy_kwh::numeric) AS energy_kwh,
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
    JOIN steps s ON s.device_id = d.vehicle_id
    GROUP BY 1, 2
), stats AS (
    SELECT d.vehicle_id, rollup_hour(r.ts) AS hour, sum(r.battery_temp::numeric) AS battery_temp_sum, max(r.battery_temp) AS battery_temp_max, min(r.soc) AS soc_min, max(r.soc) AS soc_max, (array_agg(r.soc ORDER BY r.ts DESC))[1] AS soc_last
    FROM devices d
    -- LATERAL: one index range a device (a join was planned as every reading of the range against
    -- every device: the newest readings are beyond what ANALYZE has seen; migration 0015).
    CROSS JOIN LATERAL (
        SELECT r.ts, r.battery_temp, r.soc FROM vehicle_readings r
        WHERE r.vehicle_id = d.vehicle_id AND r.ts > coalesce(d.frontier_ts, d.from_ts) AND r.ts <= d.to_ts
          AND r.ts > %(earliest_from)s::timestamptz AND r.ts <= %(latest_to)s::timestamptz
        OFFSET 0  -- kept a subquery: pulled up, it was planned as that join again
    ) r
    GROUP BY 1, 2
)
INSERT INTO vehicle_hourly_rollups AS r (
    vehicle_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, battery_temp_sum, battery_temp_max, soc_min, soc_max, soc_last,
    prior_readings, prior_energy_kwh, prior_counter_resets, prior_glitches, prior_implausible_steps,
    prior_battery_temp_sum)
SELECT e.vehicle_id, e.hour, e.readings, e.energy_kwh, e.counter_resets, e.glitches, e.implausible_steps,
       e.first_ts, e.first_kwh, e.first_predecessor_ts, e.last_ts, e.last_kwh, e.last_energy_kwh, e.last_is_reset,
       e.last_is_glitch, e.last_is_implausible, coalesce(t.battery_temp_sum, 0),
       coalesce(t.battery_temp_max, '-Infinity'), coalesce(t.soc_min, 'Infinity'), coalesce(t.soc_max, '-Infinity'),
       coalesce(t.soc_last, 0),
       f.prior_readings + f.readings + sum(e.readings) OVER w,
       f.prior_energy_kwh + f.energy_kwh - f.last_energy_kwh + sum(e.energy_kwh) OVER w,
       f.prior_counter_resets + f.counter_resets - f.last_is_reset::int + sum(e.counter_resets) OVER w,
       f.prior_glitches + f.glitches - f.last_is_glitch::int + sum(e.glitches) OVER w,
       f.prior_implausible_steps + f.implausible_steps - f.last_is_implausible::int + sum(e.implausible_steps) OVER w,
       f.prior_battery_temp_sum + f.battery_temp_sum + sum(coalesce(t.battery_temp_sum, 0)) OVER w
FROM energy e
JOIN devices d ON d.vehicle_id = e.vehicle_id
LEFT JOIN stats t ON t.vehicle_id = e.vehicle_id AND t.hour = e.hour
LEFT JOIN LATERAL (
    SELECT fr.prior_readings, fr.readings, fr.prior_energy_kwh, fr.energy_kwh, fr.last_energy_kwh,
           fr.prior_counter_resets, fr.counter_resets, fr.last_is_reset, fr.prior_glitches, fr.glitches,
           fr.last_is_glitch, fr.prior_implausible_steps, fr.implausible_steps, fr.last_is_implausible, fr.prior_battery_temp_sum, fr.battery_temp_sum
    FROM vehicle_hourly_rollups fr
    WHERE e.hour > rollup_hour(d.frontier_ts) AND fr.vehicle_id = e.vehicle_id AND fr.hour = rollup_hour(d.frontier_ts)
      AND fr.hour >= %(earliest_from)s::timestamptz - interval '1 hour' AND fr.hour <= %(latest_to)s::timestamptz
) f ON true
WINDOW w AS (PARTITION BY e.vehicle_id ORDER BY e.hour ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
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
    soc_last = CASE WHEN EXCLUDED.readings > 0 THEN EXCLUDED.soc_last ELSE r.soc_last END;

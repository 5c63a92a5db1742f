-- The in-order path of the maintenance job for meters; the twin of rollups/vehicle_append.sql (same
-- parameters and reasoning, max_power_kw is MAX_METER_POWER_KW).
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
        AS d(meter_id, from_ts, to_ts, frontier_ts)
), steps AS (
    SELECT * FROM counter_steps_batch('meter', %(device_ids)s::text[], %(from_ts)s::timestamptz[],
                                      %(to_ts)s::timestamptz[], %(earliest_from)s::timestamptz,
                                      %(latest_to)s::timestamptz, %(max_power_kw)s, false,
                                      %(known_ids)s::text[], %(known_ts)s::timestamptz[],
                                      %(known_kwh)s::double precision[])
), tails AS (
    INSERT INTO rollup_tails AS t (kind, device_id, last_ts, prev_ts, prev_kwh, prev2_ts, prev2_kwh)
    SELECT DISTINCT ON (s.device_id) 'meter', s.device_id, s.ts, s.prev_ts, s.prev_kwh, s.prev2_ts, s.prev2_kwh
    FROM steps s
    ORDER BY s.device_id, s.ts DESC
    ON CONFLICT (kind, device_id) DO UPDATE SET
        last_ts = EXCLUDED.last_ts, prev_ts = EXCLUDED.prev_ts, prev_kwh = EXCLUDED.prev_kwh,
        prev2_ts = EXCLUDED.prev2_ts, prev2_kwh = EXCLUDED.prev2_kwh
), energy AS (
    SELECT d.meter_id, rollup_hour(s.ts) AS hour,
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
    JOIN steps s ON s.device_id = d.meter_id
    GROUP BY 1, 2
), stats AS (
    SELECT d.meter_id, rollup_hour(r.ts) AS hour, sum(r.voltage::numeric) AS voltage_sum, min(r.voltage) AS voltage_min, max(r.voltage) AS voltage_max
    FROM devices d
    -- LATERAL: one index range a device (a join was planned as every reading of the range against
    -- every device: the newest readings are beyond what ANALYZE has seen; migration 0015).
    CROSS JOIN LATERAL (
        SELECT r.ts, r.voltage FROM meter_readings r
        WHERE r.meter_id = d.meter_id AND r.ts > coalesce(d.frontier_ts, d.from_ts) AND r.ts <= d.to_ts
          AND r.ts > %(earliest_from)s::timestamptz AND r.ts <= %(latest_to)s::timestamptz
        OFFSET 0  -- kept a subquery: pulled up, it was planned as that join again
    ) r
    GROUP BY 1, 2
)
INSERT INTO meter_hourly_rollups AS r (
    meter_id, hour, readings, energy_kwh, counter_resets, glitches, implausible_steps,
    first_ts, first_kwh, first_predecessor_ts, last_ts, last_kwh, last_energy_kwh, last_is_reset,
    last_is_glitch, last_is_implausible, voltage_sum, voltage_min, voltage_max, prior_readings, prior_energy_kwh,
    prior_counter_resets, prior_glitches, prior_implausible_steps)
SELECT e.meter_id, e.hour, e.readings, e.energy_kwh, e.counter_resets, e.glitches, e.implausible_steps,
       e.first_ts, e.first_kwh, e.first_predecessor_ts, e.last_ts, e.last_kwh, e.last_energy_kwh, e.last_is_reset,
       e.last_is_glitch, e.last_is_implausible, coalesce(t.voltage_sum, 0),
       coalesce(t.voltage_min, 'Infinity'), coalesce(t.voltage_max, '-Infinity'),
       f.prior_readings + f.readings + sum(e.readings) OVER w,
       f.prior_energy_kwh + f.energy_kwh - f.last_energy_kwh + sum(e.energy_kwh) OVER w,
       f.prior_counter_resets + f.counter_resets - f.last_is_reset::int + sum(e.counter_resets) OVER w,
       f.prior_glitches + f.glitches - f.last_is_glitch::int + sum(e.glitches) OVER w,
       f.prior_implausible_steps + f.implausible_steps - f.last_is_implausible::int + sum(e.implausible_steps) OVER w
FROM energy e
JOIN devices d ON d.meter_id = e.meter_id
LEFT JOIN stats t ON t.meter_id = e.meter_id AND t.hour = e.hour
LEFT JOIN LATERAL (
    SELECT fr.prior_readings, fr.readings, fr.prior_energy_kwh, fr.energy_kwh, fr.last_energy_kwh,
           fr.prior_counter_resets, fr.counter_resets, fr.last_is_reset, fr.prior_glitches, fr.glitches,
           fr.last_is_glitch, fr.prior_implausible_steps, fr.implausible_steps, fr.last_is_implausible
    FROM meter_hourly_rollups fr
    WHERE e.hour > rollup_hour(d.frontier_ts) AND fr.meter_id = e.meter_id AND fr.hour = rollup_hour(d.frontier_ts)
      AND fr.hour >= %(earliest_from)s::timestamptz - interval '1 hour' AND fr.hour <= %(latest_to)s::timestamptz
) f ON true
WINDOW w AS (PARTITION BY e.meter_id ORDER BY e.hour ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
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

-- Make meters' prior sums (prior_*, migration 0013: the sums of each device's rows before a row)
-- true from from_hour on, after the fold, the late path or the rebuild changed rows there. The first
-- row from from_hour keeps its prior sums when it has them (rows before it did not change); a row the
-- statement before inserted has none (NULL), and the row before it gives them. Every later row's are
-- the first's plus the rows between; rows already right are not written, so the steady-load fold
-- (its frontier row grew, no row after it) writes only the hour's new rows, once.
-- Parameters: device_ids, from_hours (arrays, one element per device); earliest (min(from_hours)) and
-- since (earliest - 170 h): plain values, so the row scans prune partitions at plan time; the look
-- for the row before a new first row searches [since, its hour) first, then, for a device back after
-- a long silence, the older partitions.
WITH devices AS (
    SELECT * FROM unnest(%(device_ids)s::text[], %(from_hours)s::timestamptz[]) AS d(meter_id, from_hour)
), changed AS (
    SELECT r.meter_id, r.hour, r.readings, r.energy_kwh, r.counter_resets, r.glitches, r.implausible_steps,
           r.prior_readings, r.prior_energy_kwh, r.prior_counter_resets, r.prior_glitches,
           r.prior_implausible_steps, row_number() OVER (PARTITION BY r.meter_id ORDER BY r.hour) AS n
    FROM devices d
    JOIN meter_hourly_rollups r ON r.meter_id = d.meter_id AND r.hour >= d.from_hour
     AND r.hour >= %(earliest)s::timestamptz
), near AS (
    SELECT c.*, p.found AS near_found, p.readings AS p_readings, p.energy_kwh AS p_energy_kwh,
           p.counter_resets AS p_counter_resets, p.glitches AS p_glitches, p.implausible_steps AS p_implausible_steps
    FROM changed c
    LEFT JOIN LATERAL (
        SELECT true AS found, r.prior_readings + r.readings AS readings, r.prior_energy_kwh + r.energy_kwh AS energy_kwh,
               r.prior_counter_resets + r.counter_resets AS counter_resets, r.prior_glitches + r.glitches AS glitches,
               r.prior_implausible_steps + r.implausible_steps AS implausible_steps
        FROM meter_hourly_rollups r
        WHERE c.prior_readings IS NULL AND r.meter_id = c.meter_id AND r.hour < c.hour
          AND r.hour >= %(since)s::timestamptz
        ORDER BY r.hour DESC LIMIT 1
    ) p ON true
    WHERE c.n = 1
), base AS (
    SELECT n.meter_id,
           coalesce(n.prior_readings, n.p_readings, f.readings, 0) AS readings,
           coalesce(n.prior_energy_kwh, n.p_energy_kwh, f.energy_kwh, 0) AS energy_kwh,
           coalesce(n.prior_counter_resets, n.p_counter_resets, f.counter_resets, 0) AS counter_resets,
           coalesce(n.prior_glitches, n.p_glitches, f.glitches, 0) AS glitches,
           coalesce(n.prior_implausible_steps, n.p_implausible_steps, f.implausible_steps, 0) AS implausible_steps
    FROM near n
    LEFT JOIN LATERAL (
        SELECT r.prior_readings + r.readings AS readings, r.prior_energy_kwh + r.energy_kwh AS energy_kwh,
               r.prior_counter_resets + r.counter_resets AS counter_resets, r.prior_glitches + r.glitches AS glitches,
               r.prior_implausible_steps + r.implausible_steps AS implausible_steps
        FROM meter_hourly_rollups r
        WHERE n.prior_readings IS NULL AND n.near_found IS NULL AND r.meter_id = n.meter_id
          AND r.hour < %(since)s::timestamptz
        ORDER BY r.hour DESC LIMIT 1
    ) f ON true
), sums AS (
    SELECT c.meter_id, c.hour,
           b.readings + coalesce(sum(c.readings) OVER w, 0) AS prior_readings,
           b.energy_kwh + coalesce(sum(c.energy_kwh) OVER w, 0) AS prior_energy_kwh,
           b.counter_resets + coalesce(sum(c.counter_resets) OVER w, 0) AS prior_counter_resets,
           b.glitches + coalesce(sum(c.glitches) OVER w, 0) AS prior_glitches,
           b.implausible_steps + coalesce(sum(c.implausible_steps) OVER w, 0) AS prior_implausible_steps
    FROM changed c
    JOIN base b ON b.meter_id = c.meter_id
    WINDOW w AS (PARTITION BY c.meter_id ORDER BY c.hour ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
UPDATE meter_hourly_rollups r SET
    prior_readings = s.prior_readings, prior_energy_kwh = s.prior_energy_kwh,
    prior_counter_resets = s.prior_counter_resets, prior_glitches = s.prior_glitches,
    prior_implausible_steps = s.prior_implausible_steps
FROM sums s
WHERE r.meter_id = s.meter_id AND r.hour = s.hour AND r.hour >= %(earliest)s::timestamptz
  AND (r.prior_readings, r.prior_energy_kwh, r.prior_counter_resets, r.prior_glitches, r.prior_implausible_steps)
      IS DISTINCT FROM (s.prior_readings, s.prior_energy_kwh, s.prior_counter_resets, s.prior_glitches,
                        s.prior_implausible_steps);

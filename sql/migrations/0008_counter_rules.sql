-- THE counter rule set: every energy figure (analytics, history buckets, rollups) is a sum of these
-- per-reading contributions, so that any two figures over the same readings agree exactly.
--
-- counter_steps(kind, device_id, from_ts, to_ts, max_power_kw) returns one row per reading of the
-- device with from_ts < ts <= to_ts (the window is half-open like the analytics': (from, to]):
--   ts, kwh            the reading and its counter value
--   energy_kwh         what the reading adds to any window holding it (>= 0)
--   is_glitch          v < v[i-1] and the next reading climbs back: v[i+1] >= v[i-1]. Adds 0, and the
--                      next reading counts from v[i-1] (no reset is counted).
--   is_reset           a drop that is not a glitch (a replaced meter): adds 0, counting goes on from v.
--   is_implausible     an increase implying more than max_power_kw on average since its predecessor: adds 0.
--   predecessor_ts     the reading this one counts from (i-1, or i-2 when i-1 is a glitch); NULL if none.
-- kind is 'meter' (kwh_consumed_ac of meter_readings) or 'vehicle' (kwh_delivered_dc of
-- vehicle_readings); max_power_kw is MAX_METER_POWER_KW or MAX_VEHICLE_POWER_KW from the settings.
--
-- Why per reading: a contribution depends only on the reading's neighbours (i-2, i-1, i+1), never on
-- the window, so the energy of any window is the sum over the readings inside it, buckets add up to
-- their window exactly, and per-hour sums can be stored (rollups). A new or late reading j changes
-- the contributions of readings j-1 .. j+2 only. Two glitches are never adjacent (if i-1 is a glitch,
-- v[i] >= v[i-2] > v[i-1]). While a drop has no next reading it is a reset; it becomes a glitch, and
-- the figures change, when a next reading that climbs back arrives.
-- A neighbour more than 7 days away is no neighbour (a device silent for a week starts afresh): this
-- keeps the look before and after the window to a few partitions, and keeps contributions
-- independent of the window. The 2 readings before from_ts and the 1 after to_ts are found with
-- LIMIT index scans that stop at the first partition holding one.
-- LANGUAGE sql STABLE with one SELECT: Postgres inlines it into the caller, and the branch of the
-- other kind is a constant-false filter that never runs.
-- ts shifted by whole hours. Hours are absolute time whatever the session's TimeZone, so this is
-- truly IMMUTABLE (timestamptz + interval is only STABLE, as '1 day' depends on the zone): Postgres
-- folds it at plan time and prunes the partitions outside the look before and after the window
-- (with the operator inline, every partition was planned: 15-25 ms of planning per query).
CREATE OR REPLACE FUNCTION counter_shift(ts timestamptz, hours integer)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE COST 1
AS $$ SELECT ts + make_interval(hours => hours) $$;

CREATE OR REPLACE FUNCTION counter_steps(
    kind text, device_id text, from_ts timestamptz, to_ts timestamptz, max_power_kw double precision
)
RETURNS TABLE (
    ts timestamptz, kwh double precision, energy_kwh double precision,
    is_glitch boolean, is_reset boolean, is_implausible boolean, predecessor_ts timestamptz
)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
WITH series AS (
    (SELECT r.ts, r.kwh_consumed_ac AS v FROM meter_readings r
     WHERE kind = 'meter' AND r.meter_id = device_id
       AND r.ts <= from_ts AND r.ts >= counter_shift(from_ts, -168)
     ORDER BY r.ts DESC LIMIT 1)
    UNION ALL
    (SELECT r.ts, r.kwh_consumed_ac FROM meter_readings r
     WHERE kind = 'meter' AND r.meter_id = device_id
       AND r.ts < (SELECT max(b.ts) FROM meter_readings b
                   WHERE b.meter_id = device_id AND b.ts <= from_ts AND b.ts >= counter_shift(from_ts, -168))
       AND r.ts >= counter_shift(from_ts, -336)
     ORDER BY r.ts DESC LIMIT 1)
    UNION ALL
    (SELECT r.ts, r.kwh_consumed_ac FROM meter_readings r
     WHERE kind = 'meter' AND r.meter_id = device_id AND r.ts > from_ts AND r.ts <= to_ts)
    UNION ALL
    (SELECT r.ts, r.kwh_consumed_ac FROM meter_readings r
     WHERE kind = 'meter' AND r.meter_id = device_id
       AND r.ts > to_ts AND r.ts <= counter_shift(to_ts, 168)
     ORDER BY r.ts LIMIT 1)
    UNION ALL
    (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
     WHERE kind = 'vehicle' AND r.vehicle_id = device_id
       AND r.ts <= from_ts AND r.ts >= counter_shift(from_ts, -168)
     ORDER BY r.ts DESC LIMIT 1)
    UNION ALL
    (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
     WHERE kind = 'vehicle' AND r.vehicle_id = device_id
       AND r.ts < (SELECT max(b.ts) FROM vehicle_readings b
                   WHERE b.vehicle_id = device_id AND b.ts <= from_ts AND b.ts >= counter_shift(from_ts, -168))
       AND r.ts >= counter_shift(from_ts, -336)
     ORDER BY r.ts DESC LIMIT 1)
    UNION ALL
    (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
     WHERE kind = 'vehicle' AND r.vehicle_id = device_id AND r.ts > from_ts AND r.ts <= to_ts)
    UNION ALL
    (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
     WHERE kind = 'vehicle' AND r.vehicle_id = device_id
       AND r.ts > to_ts AND r.ts <= counter_shift(to_ts, 168)
     ORDER BY r.ts LIMIT 1)
), neighbours AS (
    -- lag 1, lag 2 and lead 1 in one window pass.
    SELECT s.ts, s.v,
           lag(s.v) OVER w AS v1, lag(s.ts) OVER w AS t1,
           lag(s.v, 2) OVER w AS v2, lag(s.ts, 2) OVER w AS t2,
           lead(s.v) OVER w AS vn, lead(s.ts) OVER w AS tn
    FROM series s
    -- ROWS: lag/lead ignore the frame, and the default RANGE frame makes Postgres 15 compare every
    -- row with its peers for nothing.
    WINDOW w AS (ORDER BY s.ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), near AS (
    -- Drop the neighbours more than 7 days away; i-2 must be near i-1 (it is i-1's predecessor).
    -- OFFSET 0 (here and below) keeps each step a subquery computed once per row: flattened, every
    -- later reference to v1, v2, pv... repeated the CASE expressions it stands for (about 3x the CPU).
    SELECT n.ts, n.v,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' THEN n.v1 END AS v1,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' THEN n.t1 END AS t1,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' AND n.t2 >= n.t1 - interval '168 hours' THEN n.v2 END AS v2,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' AND n.t2 >= n.t1 - interval '168 hours' THEN n.t2 END AS t2,
           CASE WHEN n.tn <= n.ts + interval '168 hours' THEN n.vn END AS vn
    FROM neighbours n
    WHERE n.ts > from_ts AND n.ts <= to_ts
    OFFSET 0
), stepped AS (
    -- A glitch: below its predecessor, and the next reading climbs back. The predecessor this
    -- reading counts from is i-2 when i-1 is a glitch (it fell below i-2 and this reading climbed back).
    SELECT c.ts, c.v,
           (c.v < c.v1 AND c.vn >= c.v1) IS TRUE AS is_glitch,
           CASE WHEN (c.v1 < c.v2 AND c.v >= c.v2) IS TRUE THEN c.v2 ELSE c.v1 END AS pv,
           CASE WHEN (c.v1 < c.v2 AND c.v >= c.v2) IS TRUE THEN c.t2 ELSE c.t1 END AS pt
    FROM near c
    OFFSET 0
), judged AS (
    SELECT s.ts, s.v, s.is_glitch, s.pt,
           (NOT s.is_glitch AND s.v < s.pv) IS TRUE AS is_reset,
           (NOT s.is_glitch AND s.v > s.pv
            AND (s.v - s.pv) / (date_part('epoch', s.ts - s.pt) / 3600.0) > max_power_kw) IS TRUE AS is_implausible,
           s.v - s.pv AS step
    FROM stepped s
    OFFSET 0
)
SELECT j.ts, j.v,
       CASE WHEN j.is_glitch OR j.is_implausible OR NOT j.step > 0 OR j.step IS NULL THEN 0.0 ELSE j.step END,
       j.is_glitch, j.is_reset, j.is_implausible, j.pt
FROM judged j
$$;

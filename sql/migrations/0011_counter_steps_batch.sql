-- counter_steps() for many devices in one statement: the rollup maintenance's in-order fold called
-- counter_steps() once per device, and each call's five LIMIT index scans ran over every daily
-- partition (about 100, pruned again at run time per device: ~250 us a device, the fold cost 6x the
-- drain's CPU at steady load). This one prunes the partitions once for the whole batch.
--
-- counter_steps_batch(kind, device_ids, from_ts, to_ts, earliest_from, latest_to, max_power_kw
-- [, look_after]) returns, for every device i, the rows counter_steps(kind, device_ids[i], from_ts[i],
-- to_ts[i], max_power_kw) returns, with the device's id first. look_after false: judge as if no
-- reading came after to_ts (the rollup fold: a reading newer than its batch is not folded yet, and
-- its own fold judges the batch's newest reading again); it saves the look after to_ts, an index
-- probe into every daily partition of the next 7 days per device, half the cost at steady load. earliest_from and latest_to must be min(from_ts)
-- and max(to_ts) (the caller knows them): as plain values they prune the partitions outside
-- [earliest_from - 336 h, latest_to + 168 h] at plan time (from inside the arrays, Postgres cannot).
--
-- The series is counter_steps()'s (the 2 readings before from_ts, the window, the first reading within
-- 7 days after to_ts), each part read for all devices at once; the rules below are counter_steps()'s
-- word for word, partitioned by device. tests/test_rollups.py proves the two equal with hypothesis.
CREATE OR REPLACE FUNCTION counter_steps_batch(
    kind text, device_ids text[], from_ts timestamptz[], to_ts timestamptz[], earliest_from timestamptz,
    latest_to timestamptz, max_power_kw double precision, look_after boolean DEFAULT true
)
RETURNS TABLE (
    device_id text, ts timestamptz, kwh double precision, energy_kwh double precision,
    is_glitch boolean, is_reset boolean, is_implausible boolean, predecessor_ts timestamptz
)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
WITH devices AS MATERIALIZED (
    SELECT * FROM unnest(device_ids, from_ts, to_ts) AS d(device_id, from_ts, to_ts)
), series AS (
    -- The 2 readings before from_ts within 14 days. counter_steps() takes the second only when the
    -- first is within 7 days; here the rules' own 7-day filter (near, below) drops both otherwise.
    SELECT d.device_id, d.from_ts, d.to_ts, b.ts, b.v
    FROM devices d
    CROSS JOIN LATERAL (
        (SELECT r.ts, r.kwh_consumed_ac AS v FROM meter_readings r
         WHERE kind = 'meter' AND r.meter_id = d.device_id AND r.ts <= d.from_ts
           AND r.ts >= counter_shift(d.from_ts, -336) AND r.ts >= counter_shift(earliest_from, -336)
         ORDER BY r.ts DESC LIMIT 2)
        UNION ALL
        (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
         WHERE kind = 'vehicle' AND r.vehicle_id = d.device_id AND r.ts <= d.from_ts
           AND r.ts >= counter_shift(d.from_ts, -336) AND r.ts >= counter_shift(earliest_from, -336)
         ORDER BY r.ts DESC LIMIT 2)
    ) b
    UNION ALL
    SELECT d.device_id, d.from_ts, d.to_ts, r.ts, r.kwh_consumed_ac
    FROM devices d
    JOIN meter_readings r ON r.meter_id = d.device_id AND r.ts > d.from_ts AND r.ts <= d.to_ts
    WHERE kind = 'meter' AND r.ts > earliest_from AND r.ts <= latest_to
    UNION ALL
    SELECT d.device_id, d.from_ts, d.to_ts, r.ts, r.kwh_delivered_dc
    FROM devices d
    JOIN vehicle_readings r ON r.vehicle_id = d.device_id AND r.ts > d.from_ts AND r.ts <= d.to_ts
    WHERE kind = 'vehicle' AND r.ts > earliest_from AND r.ts <= latest_to
    UNION ALL
    SELECT d.device_id, d.from_ts, d.to_ts, a.ts, a.v
    FROM devices d
    CROSS JOIN LATERAL (
        (SELECT r.ts, r.kwh_consumed_ac AS v FROM meter_readings r
         WHERE kind = 'meter' AND r.meter_id = d.device_id AND r.ts > d.to_ts
           AND r.ts <= counter_shift(d.to_ts, 168) AND r.ts <= counter_shift(latest_to, 168)
         ORDER BY r.ts LIMIT 1)
        UNION ALL
        (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
         WHERE kind = 'vehicle' AND r.vehicle_id = d.device_id AND r.ts > d.to_ts
           AND r.ts <= counter_shift(d.to_ts, 168) AND r.ts <= counter_shift(latest_to, 168)
         ORDER BY r.ts LIMIT 1)
    ) a
    WHERE look_after
), neighbours AS (
    SELECT s.device_id, s.from_ts, s.to_ts, s.ts, s.v,
           lag(s.v) OVER w AS v1, lag(s.ts) OVER w AS t1,
           lag(s.v, 2) OVER w AS v2, lag(s.ts, 2) OVER w AS t2,
           lead(s.v) OVER w AS vn, lead(s.ts) OVER w AS tn
    FROM series s
    WINDOW w AS (PARTITION BY s.device_id ORDER BY s.ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), near AS (
    SELECT n.device_id, n.ts, n.v,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' THEN n.v1 END AS v1,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' THEN n.t1 END AS t1,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' AND n.t2 >= n.t1 - interval '168 hours' THEN n.v2 END AS v2,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' AND n.t2 >= n.t1 - interval '168 hours' THEN n.t2 END AS t2,
           CASE WHEN n.tn <= n.ts + interval '168 hours' THEN n.vn END AS vn
    FROM neighbours n
    WHERE n.ts > n.from_ts AND n.ts <= n.to_ts
    OFFSET 0
), stepped AS (
    SELECT c.device_id, c.ts, c.v,
           (c.v < c.v1 AND c.vn >= c.v1) IS TRUE AS is_glitch,
           CASE WHEN (c.v1 < c.v2 AND c.v >= c.v2) IS TRUE THEN c.v2 ELSE c.v1 END AS pv,
           CASE WHEN (c.v1 < c.v2 AND c.v >= c.v2) IS TRUE THEN c.t2 ELSE c.t1 END AS pt
    FROM near c
    OFFSET 0
), judged AS (
    SELECT s.device_id, s.ts, s.v, s.is_glitch, s.pt,
           (NOT s.is_glitch AND s.v < s.pv) IS TRUE AS is_reset,
           (NOT s.is_glitch AND s.v > s.pv
            AND (s.v - s.pv) / (date_part('epoch', s.ts - s.pt) / 3600.0) > max_power_kw) IS TRUE AS is_implausible,
           s.v - s.pv AS step
    FROM stepped s
    OFFSET 0
)
SELECT j.device_id, j.ts, j.v,
       CASE WHEN j.is_glitch OR j.is_implausible OR NOT j.step > 0 OR j.step IS NULL THEN 0.0 ELSE j.step END,
       j.is_glitch, j.is_reset, j.is_implausible, j.pt
FROM judged j
$$;

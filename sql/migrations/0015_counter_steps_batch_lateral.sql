-- counter_steps_batch() reads the readings it judges one device at a time.
--
-- 0012's function joined the batch's devices to the readings of (earliest_from, latest_to] with a
-- plain JOIN. At steady load those readings are the last second's, newer than anything ANALYZE has
-- seen, so Postgres estimated one row there and planned a nested loop that compared every reading of
-- the range with every device of the batch: 2,000,000 comparisons, about 250 ms, for a fold of 1,000
-- devices per kind, a cost per device that grew with the batch. A LATERAL range per device (an index
-- probe on (device, ts) each) costs the same whatever the estimate. Arguments, answer and rules are
-- 0012's; tests/test_rollups.py holds the function equal to counter_steps(). CREATE OR REPLACE
-- restates the whole body: only the arm of the readings judged (below) differs from 0012's.
CREATE OR REPLACE FUNCTION counter_steps_batch(
    kind text, device_ids text[], from_ts timestamptz[], to_ts timestamptz[], earliest_from timestamptz,
    latest_to timestamptz, max_power_kw double precision, look_after boolean DEFAULT true,
    known_ids text[] DEFAULT NULL, known_ts timestamptz[] DEFAULT NULL, known_kwh double precision[] DEFAULT NULL
)
RETURNS TABLE (
    device_id text, ts timestamptz, kwh double precision, energy_kwh double precision,
    is_glitch boolean, is_reset boolean, is_implausible boolean, predecessor_ts timestamptz,
    prev_ts timestamptz, prev_kwh double precision, prev2_ts timestamptz, prev2_kwh double precision
)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
WITH devices AS MATERIALIZED (
    SELECT * FROM unnest(device_ids, from_ts, to_ts) AS d(device_id, from_ts, to_ts)
), series AS (
    -- The 2 readings before from_ts within 14 days. counter_steps() takes the second only when the
    -- first is within 7 days; here the rules' own 7-day filter (near, below) drops both otherwise.
    -- In two steps, the last hour first and the two weeks before it only when the last hour holds
    -- fewer than 2: Postgres plans each LIMIT 2 as a sort of every reading in its range (a per-device
    -- range is a run-time value it cannot estimate), and two weeks of a device reporting every minute
    -- are 20,000 readings. A third reading read this way is harmless: only the readings in
    -- (from_ts, to_ts] are judged, and their neighbours are the nearest 2 before them.
    -- The modes (known_ids, look_after below) are tested inside each LIMIT query: a constant-false
    -- test there leaves the query unplanned; outside it, every partition under it was planned (12 ms).
    SELECT d.device_id, d.from_ts, d.to_ts, b.ts, b.v
    FROM devices d
    CROSS JOIN LATERAL (
        (SELECT r.ts, r.kwh_consumed_ac AS v FROM meter_readings r
         WHERE kind = 'meter' AND known_ids IS NULL AND r.meter_id = d.device_id AND r.ts <= d.from_ts
           AND r.ts >= counter_shift(d.from_ts, -1)
           AND r.ts >= counter_shift(earliest_from, -1) AND r.ts <= latest_to
         ORDER BY r.ts DESC LIMIT 2)
        UNION ALL
        (SELECT r.ts, r.kwh_consumed_ac FROM meter_readings r
         WHERE kind = 'meter' AND known_ids IS NULL AND r.meter_id = d.device_id
           AND r.ts < counter_shift(d.from_ts, -1)
           AND r.ts >= counter_shift(d.from_ts, -336)
           AND r.ts >= counter_shift(earliest_from, -336) AND r.ts <= latest_to
           AND (SELECT count(*) FROM (SELECT FROM meter_readings h
                                      WHERE h.meter_id = d.device_id AND h.ts <= d.from_ts
                                        AND h.ts >= counter_shift(d.from_ts, -1)
                                        AND h.ts >= counter_shift(earliest_from, -1) AND h.ts <= latest_to
                                      LIMIT 2) last_hour) < 2
         ORDER BY r.ts DESC LIMIT 2)
        UNION ALL
        (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
         WHERE kind = 'vehicle' AND known_ids IS NULL AND r.vehicle_id = d.device_id AND r.ts <= d.from_ts
           AND r.ts >= counter_shift(d.from_ts, -1)
           AND r.ts >= counter_shift(earliest_from, -1) AND r.ts <= latest_to
         ORDER BY r.ts DESC LIMIT 2)
        UNION ALL
        (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
         WHERE kind = 'vehicle' AND known_ids IS NULL AND r.vehicle_id = d.device_id
           AND r.ts < counter_shift(d.from_ts, -1)
           AND r.ts >= counter_shift(d.from_ts, -336)
           AND r.ts >= counter_shift(earliest_from, -336) AND r.ts <= latest_to
           AND (SELECT count(*) FROM (SELECT FROM vehicle_readings h
                                      WHERE h.vehicle_id = d.device_id AND h.ts <= d.from_ts
                                        AND h.ts >= counter_shift(d.from_ts, -1)
                                        AND h.ts >= counter_shift(earliest_from, -1) AND h.ts <= latest_to
                                      LIMIT 2) last_hour) < 2
         ORDER BY r.ts DESC LIMIT 2)
    ) b
    UNION ALL
    -- The caller's known readings before from_ts, under the same 14-day bound as the look above.
    SELECT d.device_id, d.from_ts, d.to_ts, k.ts, k.v
    FROM unnest(known_ids, known_ts, known_kwh) AS k(device_id, ts, v)
    JOIN devices d ON d.device_id = k.device_id
    WHERE known_ids IS NOT NULL AND k.ts <= d.from_ts AND k.ts >= counter_shift(d.from_ts, -336)
    UNION ALL
    -- The readings judged, (from_ts, to_ts] of each device: one index range a device (LATERAL).
    SELECT d.device_id, d.from_ts, d.to_ts, r.ts, r.v
    FROM devices d
    -- OFFSET 0: a subquery Postgres may not pull up into a plain join again.
    CROSS JOIN LATERAL (
        (SELECT r.ts, r.kwh_consumed_ac AS v FROM meter_readings r
         WHERE kind = 'meter' AND r.meter_id = d.device_id AND r.ts > d.from_ts AND r.ts <= d.to_ts
           AND r.ts > earliest_from AND r.ts <= latest_to
         OFFSET 0)
        UNION ALL
        (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
         WHERE kind = 'vehicle' AND r.vehicle_id = d.device_id AND r.ts > d.from_ts AND r.ts <= d.to_ts
           AND r.ts > earliest_from AND r.ts <= latest_to
         OFFSET 0)
    ) r
    UNION ALL
    SELECT d.device_id, d.from_ts, d.to_ts, a.ts, a.v
    FROM devices d
    CROSS JOIN LATERAL (
        (SELECT r.ts, r.kwh_consumed_ac AS v FROM meter_readings r
         WHERE kind = 'meter' AND look_after AND r.meter_id = d.device_id AND r.ts > d.to_ts
           AND r.ts <= counter_shift(d.to_ts, 168) AND r.ts <= counter_shift(latest_to, 168)
         ORDER BY r.ts LIMIT 1)
        UNION ALL
        (SELECT r.ts, r.kwh_delivered_dc FROM vehicle_readings r
         WHERE kind = 'vehicle' AND look_after AND r.vehicle_id = d.device_id AND r.ts > d.to_ts
           AND r.ts <= counter_shift(d.to_ts, 168) AND r.ts <= counter_shift(latest_to, 168)
         ORDER BY r.ts LIMIT 1)
    ) a
), neighbours AS (
    SELECT s.device_id, s.from_ts, s.to_ts, s.ts, s.v,
           lag(s.v) OVER w AS v1, lag(s.ts) OVER w AS t1,
           lag(s.v, 2) OVER w AS v2, lag(s.ts, 2) OVER w AS t2,
           lead(s.v) OVER w AS vn, lead(s.ts) OVER w AS tn
    FROM series s
    WINDOW w AS (PARTITION BY s.device_id ORDER BY s.ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), near AS (
    SELECT n.device_id, n.ts, n.v, n.t1 AS prev_ts, n.v1 AS prev_kwh, n.t2 AS prev2_ts, n.v2 AS prev2_kwh,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' THEN n.v1 END AS v1,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' THEN n.t1 END AS t1,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' AND n.t2 >= n.t1 - interval '168 hours' THEN n.v2 END AS v2,
           CASE WHEN n.t1 >= n.ts - interval '168 hours' AND n.t2 >= n.t1 - interval '168 hours' THEN n.t2 END AS t2,
           CASE WHEN n.tn <= n.ts + interval '168 hours' THEN n.vn END AS vn
    FROM neighbours n
    WHERE n.ts > n.from_ts AND n.ts <= n.to_ts
    OFFSET 0
), stepped AS (
    SELECT c.device_id, c.ts, c.v, c.prev_ts, c.prev_kwh, c.prev2_ts, c.prev2_kwh,
           (c.v < c.v1 AND c.vn >= c.v1) IS TRUE AS is_glitch,
           CASE WHEN (c.v1 < c.v2 AND c.v >= c.v2) IS TRUE THEN c.v2 ELSE c.v1 END AS pv,
           CASE WHEN (c.v1 < c.v2 AND c.v >= c.v2) IS TRUE THEN c.t2 ELSE c.t1 END AS pt
    FROM near c
    OFFSET 0
), judged AS (
    SELECT s.device_id, s.ts, s.v, s.is_glitch, s.pt, s.prev_ts, s.prev_kwh, s.prev2_ts, s.prev2_kwh,
           (NOT s.is_glitch AND s.v < s.pv) IS TRUE AS is_reset,
           (NOT s.is_glitch AND s.v > s.pv
            AND (s.v - s.pv) / (date_part('epoch', s.ts - s.pt) / 3600.0) > max_power_kw) IS TRUE AS is_implausible,
           s.v - s.pv AS step
    FROM stepped s
    OFFSET 0
)
SELECT j.device_id, j.ts, j.v,
       CASE WHEN j.is_glitch OR j.is_implausible OR NOT j.step > 0 OR j.step IS NULL THEN 0.0 ELSE j.step END,
       j.is_glitch, j.is_reset, j.is_implausible, j.pt, j.prev_ts, j.prev_kwh, j.prev2_ts, j.prev2_kwh
FROM judged j
$$;

-- Drop the tail cache of devices whose rollup rows are recomputed (the late path, the rebuild) when
-- the recomputed buckets reach the tail's older reading: a late reading after it is one of the 2
-- readings before the frontier now, and buckets recomputed past it may hold a newer frontier. Tails
-- of devices whose recomputed buckets all end before it (a backfill of older days) stay true.
-- The devices' next in-order fold without a tail looks into raw history once and writes it again.
-- Parameters: kind, device_ids, to_hours (arrays, one element per device: the last bucket recomputed).
DELETE FROM rollup_tails t
USING unnest(%(device_ids)s::text[], %(to_hours)s::timestamptz[]) AS d(device_id, to_hour)
WHERE t.kind = %(kind)s AND t.device_id = d.device_id
  AND (t.prev2_ts IS NULL OR t.prev2_ts <= counter_shift(d.to_hour, 1));

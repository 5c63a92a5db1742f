-- The tail cache of a batch of devices (migration 0012): each one's newest folded reading and the 2
-- readings before it. Parameters: kind ('meter' or 'vehicle'), device_ids (text[]).
SELECT t.device_id, t.last_ts, t.prev_ts, t.prev_kwh, t.prev2_ts, t.prev2_kwh
FROM unnest(%(device_ids)s::text[]) AS d(device_id)
JOIN rollup_tails t ON t.kind = %(kind)s AND t.device_id = d.device_id;

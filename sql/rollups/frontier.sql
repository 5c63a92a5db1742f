-- Each device's rollup frontier: its newest rollup row (the hour and the last reading it holds).
-- Parameters: device_ids (text[]), since (timestamptz: at most the batch's oldest new reading - 170 h).
-- Composed with {rollups} and {id} (the kind's table and column names).
-- Devices without any rollup row since `since` are absent from the answer: a frontier older than
-- 168 h before a device's new readings is no neighbour of them (counter_steps()), so folding them
-- as a device's first readings is the same. since, a plain value, prunes the partitions before it
-- at plan time (without it, each device's lookup pruned every daily partition again at run time).
SELECT d.device_id, f.hour, f.last_ts
FROM unnest(%(device_ids)s::text[]) AS d(device_id)
CROSS JOIN LATERAL (
    SELECT r.hour, r.last_ts FROM {rollups} r
    WHERE r.{id} = d.device_id AND r.hour >= %(since)s::timestamptz
    ORDER BY r.hour DESC LIMIT 1
) f;

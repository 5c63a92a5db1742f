-- Each device's rollup frontier: its newest rollup row (the hour and the last reading it holds).
-- Parameters: device_ids (text[]). Composed with {rollups} and {id} (the kind's table and id column).
-- Devices without any rollup row are absent from the answer.
SELECT d.device_id, f.hour, f.last_ts
FROM unnest(%(device_ids)s::text[]) AS d(device_id)
CROSS JOIN LATERAL (
    SELECT r.hour, r.last_ts FROM {rollups} r WHERE r.{id} = d.device_id ORDER BY r.hour DESC LIMIT 1
) f;

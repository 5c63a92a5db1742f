-- Remove a device's rollup rows of the buckets from_hour .. to_hour (before they are recomputed).
-- Parameters: device_ids, from_hours, to_hours (arrays, one element per device). Composed with
-- {rollups} and {id}.
DELETE FROM {rollups} r
USING unnest(%(device_ids)s::text[], %(from_hours)s::timestamptz[], %(to_hours)s::timestamptz[])
      AS d(device_id, from_hour, to_hour)
WHERE r.{id} = d.device_id AND r.hour >= d.from_hour AND r.hour <= d.to_hour;

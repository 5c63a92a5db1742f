-- What an exact per-vehicle answer needs before reading rollups: per stream, the oldest reading not
-- yet folded into the rollups (the min_ts of the device's pending dirty marks; NULL when its rollups
-- are up to date). Parameters: meter_id, vehicle_id.
SELECT (SELECT min(k.min_ts) FROM rollup_marks k WHERE k.kind = 'meter' AND k.device_id = %(meter_id)s)     AS meter_pending,
       (SELECT min(k.min_ts) FROM rollup_marks k WHERE k.kind = 'vehicle' AND k.device_id = %(vehicle_id)s) AS vehicle_pending;

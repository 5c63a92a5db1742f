-- The window's first and last hours that hold any rollup row, per kind (sql/fleet/vehicles.sql reads
-- each device's rows of those hours by hour; the current hour may hold none yet, nor a window's first
-- hours). NULL when the window holds no row of the kind. Plain values for vehicles.sql, so that its
-- scans prune to one partition when planned. Read in the same REPEATABLE READ snapshot as vehicles.sql.
-- Parameters: from_ts, last_hour.
SELECT (SELECT min(r.hour) FROM vehicle_hourly_rollups r
        WHERE r.hour >= %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz) AS v_first_hour,
       (SELECT max(r.hour) FROM vehicle_hourly_rollups r
        WHERE r.hour >= %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz) AS v_last_hour,
       (SELECT min(r.hour) FROM meter_hourly_rollups r
        WHERE r.hour >= %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz) AS m_first_hour,
       (SELECT max(r.hour) FROM meter_hourly_rollups r
        WHERE r.hour >= %(from_ts)s::timestamptz AND r.hour <= %(last_hour)s::timestamptz) AS m_last_hour;

-- A meter's raw history as CSV rows (no header), oldest first: the readings with after_ts < ts <= to_ts.
-- Parameters: device_id, after_ts, to_ts (bound client-side: COPY takes no parameters).
-- Why COPY, and the timestamp's format: as in vehicle_csv.sql.
COPY (
    SELECT %(device_id)s, to_char(r.ts AT TIME ZONE 'UTC', CASE WHEN r.ts = date_trunc('second', r.ts)
               THEN 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"' END),
           r.kwh_consumed_ac, r.voltage
    FROM meter_readings r
    WHERE r.meter_id = %(device_id)s AND r.ts > %(after_ts)s AND r.ts <= %(to_ts)s
    ORDER BY r.ts
) TO STDOUT (FORMAT csv)

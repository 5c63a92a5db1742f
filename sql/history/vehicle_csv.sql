-- A vehicle's raw history as CSV rows (no header), oldest first: the readings with after_ts < ts <= to_ts.
-- Parameters: device_id, after_ts, to_ts (bound client-side: COPY takes no parameters).
-- Why COPY: Postgres writes the CSV and streams it in one statement, with no transaction, cursor or
-- per-row Python; the client reads it as it comes, so memory stays flat for any range. The
-- timestamp is written as the JSON answers write it (ISO-8601, UTC, "+00:00", microseconds if any).
COPY (
    SELECT %(device_id)s, to_char(r.ts AT TIME ZONE 'UTC', CASE WHEN r.ts = date_trunc('second', r.ts)
               THEN 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"' END),
           r.soc, r.kwh_delivered_dc, r.battery_temp
    FROM vehicle_readings r
    WHERE r.vehicle_id = %(device_id)s AND r.ts > %(after_ts)s AND r.ts <= %(to_ts)s
    ORDER BY r.ts
) TO STDOUT (FORMAT csv)

-- One page of recorded conflicting duplicates, oldest reading first, keyset on (ts, id).
-- Parameters: device_id (NULL: every device), from_ts, to_ts (the window (from, to] of the
-- readings' ts), after_ts, after_id (the last row of the previous page), limit.
SELECT c.id, c.kind, c.device_id, c.ts, c.stored, c.rejected, c.recorded_at
FROM reading_conflicts c
WHERE (%(device_id)s::text IS NULL OR c.device_id = %(device_id)s)
  AND c.ts > %(from_ts)s AND c.ts <= %(to_ts)s
  AND (c.ts, c.id) > (%(after_ts)s, %(after_id)s)
ORDER BY c.ts, c.id
LIMIT %(limit)s;

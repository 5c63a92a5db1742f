-- Take a batch of dirty marks for the maintenance job: delete them (in the job's transaction, so a
-- crash gives them back) and return each device's span of new readings, and whether the batch was
-- full (`limit` marks looked at: more are waiting, the job goes straight on).
-- Parameters: limit (marks looked at), lock_class (the advisory lock space of rollup devices).
-- Several jobs at once: each device is taken by one transaction only (a transaction-scoped advisory
-- lock per device, tried, never waited for); a device another job holds is left for the next run.
-- A mark a drain commits meanwhile is not in this statement's snapshot and stays for the next run.
WITH candidates AS MATERIALIZED (
    SELECT kind, device_id FROM rollup_marks ORDER BY id LIMIT %(limit)s
), devices AS MATERIALIZED (
    SELECT DISTINCT kind, device_id FROM candidates
), mine AS MATERIALIZED (
    SELECT kind, device_id FROM devices
    WHERE pg_try_advisory_xact_lock(%(lock_class)s, hashtext(kind || ':' || device_id))
), taken AS (
    DELETE FROM rollup_marks m USING mine
    WHERE m.kind = mine.kind AND m.device_id = mine.device_id
    RETURNING m.kind, m.device_id, m.min_ts, m.max_ts
)
SELECT kind, device_id, min(min_ts) AS min_ts, max(max_ts) AS max_ts,
       (SELECT count(*) FROM candidates) >= %(limit)s AS full_batch
FROM taken
GROUP BY kind, device_id;

-- Retention: find the daily partitions that fell out of the retention window.

-- Tables holding days of `parent` before `keep_from`, oldest first, with their state:
--   attached        an ordinary partition;
--   detach_pending  a DETACH ... CONCURRENTLY was interrupted (finish it with DETACH ... FINALIZE);
--   detached        detached already, a run stopped before its DROP.
-- Only tables named like the partitions create_daily_partitions makes (<parent>_YYYYMMDD), in the
-- parent's schema, are considered.
CREATE OR REPLACE FUNCTION expired_daily_partitions(parent regclass, keep_from date)
RETURNS TABLE (partition_name text, day date, state text)
LANGUAGE sql STABLE
AS $$
    WITH p AS (
        SELECT relname, relnamespace FROM pg_class WHERE oid = parent
    ), candidates AS (
        -- to_date only on names that match: the planner may evaluate the day before the name filter.
        SELECT c.oid, c.relname::text AS partition_name,
               CASE WHEN c.relname ~ ('^' || p.relname || '_[0-9]{8}$')
                    THEN to_date(right(c.relname, 8), 'YYYYMMDD') END AS day
        FROM pg_class c, p
        WHERE c.relnamespace = p.relnamespace
          AND c.relkind IN ('r', 'p')
          AND c.relname ~ ('^' || p.relname || '_[0-9]{8}$')
    )
    SELECT c.partition_name,
           c.day,
           CASE
               WHEN i.inhrelid IS NULL THEN 'detached'
               WHEN i.inhdetachpending THEN 'detach_pending'
               ELSE 'attached'
           END
    FROM candidates c
    LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = parent
    WHERE c.day < keep_from
    ORDER BY c.day;
$$;

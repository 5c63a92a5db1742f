-- Daily partitions: <table>_YYYYMMDD holds [day 00:00 UTC, next day 00:00 UTC).

-- Create the partitions of `parent` for every UTC day in [first_day, last_day]; skip those that exist.
-- Returns how many were created. A transaction-scoped advisory lock makes two callers at once
-- (two schedulers for a moment, a release step racing a scheduler) safe.
CREATE OR REPLACE FUNCTION create_daily_partitions(parent regclass, first_day date, last_day date)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    day     date;
    name    text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('create_daily_partitions'), hashtext(parent::text));
    day := first_day;
    WHILE day <= last_day LOOP
        name := format('%s_%s', parent::text, to_char(day, 'YYYYMMDD'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                name, parent,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- The partitions of `parent` named by day, with the UTC day each one holds.
CREATE OR REPLACE FUNCTION daily_partitions(parent regclass)
RETURNS TABLE (partition_name text, day date)
LANGUAGE sql STABLE
AS $$
    SELECT c.relname::text, to_date(right(c.relname, 8), 'YYYYMMDD')
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent
      AND c.relname ~ '_[0-9]{8}$'
    ORDER BY 2;
$$;

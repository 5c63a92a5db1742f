-- Half-empty pages for the rows the rollup fold rewrites: the hourly rollups and the tail cache.
--
-- At steady load the fold rewrites every device's frontier rollup row and its rollup_tails row once a
-- fold (about a second), and the rebuild and the late path write every row they insert a second time
-- (rollups/*_cumulative.sql sets its prior sums). With full pages each new version went to another
-- page: an entry in every index (the primary key and the hour index) for each, and the rows of one
-- hour, which the fleet statements read together (sql/fleet/vehicles.sql), scattered over one page
-- each. With room on the page the new version stays there (a HOT update: no index entry; the old
-- version is pruned in place), and rows inserted hour by hour stay together.
--
-- A partitioned table takes no storage parameters: create_daily_partitions() gives the rollup
-- tables' new partitions theirs, and the existing partitions are altered here (pages written from
-- now on; VACUUM FULL compacts an already scattered one in a quiet moment).
CREATE OR REPLACE FUNCTION create_daily_partitions(parent regclass, first_day date, last_day date)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    day     date;
    name    text;
    created integer := 0;
    options text := '';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('create_daily_partitions'), hashtext(parent::text));
    IF parent IN ('meter_hourly_rollups'::regclass, 'vehicle_hourly_rollups'::regclass) THEN
        options := ' WITH (fillfactor = 50)';
    END IF;
    day := first_day;
    WHILE day <= last_day LOOP
        name := format('%s_%s', parent::text, to_char(day, 'YYYYMMDD'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                name, parent,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC')) || options;
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END;
$$;

DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN
        SELECT i.inhrelid::regclass FROM pg_inherits i
        WHERE i.inhparent IN ('meter_hourly_rollups'::regclass, 'vehicle_hourly_rollups'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', part);
    END LOOP;
END;
$$;

ALTER TABLE rollup_tails SET (fillfactor = 50);

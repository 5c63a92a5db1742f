-- Detach in one transaction, for POSTGRES_FLAVOR=citus: Citus refuses DETACH ... CONCURRENTLY on a
-- distributed table (citusdata/citus#5264). Parameters: {parent}, {partition} (identifiers). It takes
-- an ACCESS EXCLUSIVE lock on the parent for a moment; lock_timeout (scheduler/partitions.py) bounds
-- the wait so that queries arriving behind it are not held up for long.
ALTER TABLE {parent} DETACH PARTITION {partition}

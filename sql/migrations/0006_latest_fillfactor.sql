-- The drain updates a device's *_latest row with almost every batch (10,000 meters and 10,000
-- vehicles reporting once a minute = 20,000 updates a minute). With full pages every update puts
-- the new row version on another page and adds an index entry, and the table and its key bloat
-- faster than autovacuum cleans them. Half-empty pages let Postgres keep each new version on the
-- same page (a HOT update: no index entry, old versions pruned in place). The tables are small
-- (one row per device), so doubling their size costs nothing. Applies to pages written from now on;
-- an existing, already bloated table is compacted by VACUUM FULL in a quiet moment.
ALTER TABLE meter_latest SET (fillfactor = 50);
ALTER TABLE vehicle_latest SET (fillfactor = 50);

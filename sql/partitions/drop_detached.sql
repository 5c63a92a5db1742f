-- Drop a partition once it is detached: only the detached table is locked, never the parent.
DROP TABLE IF EXISTS {partition}

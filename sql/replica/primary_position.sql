-- The primary's WAL write position, read just before the replica's replay position (replay_position.sql).
-- Parameters: none. Why: a replica that has replayed up to this point is caught up, however long ago
-- the last transaction was (the "no activity" case, where now() - pg_last_xact_replay_timestamp() grows
-- on an idle but current replica).
SELECT pg_current_wal_lsn()::text;

-- How far a streaming replica has replayed, for the replica monitor (web/replica.py).
-- Parameters: none. Why: reads go to the replica only while it is a standby (in recovery) and its
-- replay is within REPLICA_MAX_LAG_SECONDS. replay_lsn is compared with the primary's position;
-- receive_lsn stands in for it when the primary cannot be asked; seconds_since_replay (now() minus
-- the commit time of the last replayed transaction) is the lag once the replica is known to be behind.
SELECT pg_is_in_recovery()                                          AS in_recovery,
       pg_last_wal_replay_lsn()::text                               AS replay_lsn,
       pg_last_wal_receive_lsn()::text                              AS receive_lsn,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS seconds_since_replay;

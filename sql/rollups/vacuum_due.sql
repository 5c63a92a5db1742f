-- Whether the tables the fold churns are due for the maintenance job's VACUUM (scheduler/rollups.py):
-- rollup_marks, the first of them, last vacuumed more than `seconds` ago by any process, or never.
-- The jobs are shorter than the interval and each runs in a fresh work horse: the time of the last
-- VACUUM has to come from the server, not from the job. Parameter: seconds.
SELECT coalesce(max(last_vacuum), '-infinity') < now() - make_interval(secs => %(seconds)s)
FROM pg_stat_user_tables
WHERE relname = 'rollup_marks';

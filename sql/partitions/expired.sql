-- The daily partitions of one history table older than the retention window, oldest first.
SELECT partition_name, day, state FROM expired_daily_partitions(%(parent)s::regclass, %(keep_from)s::date);

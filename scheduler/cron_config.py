"""What the single scheduler process enqueues (``python -m scheduler``; ``rq cron`` reads it too).

Every schedule is an interval, not a cron string, so none depends on the machine's time zone; the
jobs compute days in UTC. Every job here is safe to run twice (two schedulers for a moment, a
retried job). A short ``ttl`` drops a kick that waited in the queue while every worker was busy
draining: the next one will do.
"""

from rq import cron

from scheduler.jobs import maintain_partitions, reclaim_stale_entries, trim_stream
from scheduler.rollups import ROLLUPS_QUEUE, maintain_rollups
from workers.drain_slots import MAINTENANCE_QUEUE, ensure_drain_jobs

# Restart any drain slot whose job was lost.
cron.register(ensure_drain_jobs, MAINTENANCE_QUEUE, interval=2, ttl=10, result_ttl=30)

# Partitions ahead of time and retention behind, every hour and at start.
cron.register(maintain_partitions, MAINTENANCE_QUEUE, interval=3600, job_timeout=600, result_ttl=86400)

# Entries a dead consumer left pending longer than RECLAIM_IDLE_SECONDS: written and acknowledged.
cron.register(reclaim_stale_entries, MAINTENANCE_QUEUE, interval=30, ttl=60, job_timeout=180, result_ttl=600)

# Acknowledged entries out of Redis memory.
cron.register(trim_stream, MAINTENANCE_QUEUE, interval=10, ttl=30, job_timeout=120, result_ttl=600)

# Hourly rollups: each job folds dirty marks for ROLLUP_JOB_SECONDS (30), polling every ROLLUP_POLL_MS,
# on the rollups worker's own queue (never on the drain's workers). A second job at once is safe.
cron.register(maintain_rollups, ROLLUPS_QUEUE, interval=30, ttl=30, job_timeout=300, result_ttl=600)

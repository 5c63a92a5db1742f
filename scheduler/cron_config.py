"""What the single ``rq cron`` process enqueues. RQ 2.x evaluates cron strings in UTC.

Every job here is safe to run twice (two schedulers for a moment, a retried job).
"""

from rq import cron

from scheduler.jobs import maintain_partitions
from workers.drain_slots import MAINTENANCE_QUEUE, ensure_drain_jobs

# Restart any drain slot whose job was lost. The short ttl drops kicks that waited in the queue
# while every worker was busy draining; the next one will do.
cron.register(ensure_drain_jobs, MAINTENANCE_QUEUE, interval=2, ttl=10, result_ttl=30)

# Partitions ahead of time (and the retention window behind), every hour and at start.
cron.register(maintain_partitions, MAINTENANCE_QUEUE, interval=3600, job_timeout=600, result_ttl=86400)

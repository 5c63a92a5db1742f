"""Keep drain jobs running: one per slot, as many slots as there are workers on the drain queue.

RQ jobs are only the trigger here. A drain job runs for DRAIN_JOB_SECONDS and then enqueues its
successor; the scheduler's ``ensure_drain_jobs`` (every two seconds) restarts any slot whose job
was lost. Two jobs on one slot by accident are harmless: the consumer group splits the entries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from common.redis_clients import rq_client
from common.settings import Settings

DRAIN_QUEUE = "drain"
MAINTENANCE_QUEUE = "maintenance"
DRAIN_JOB = "workers.drain.drain_stream"
_JOB_KEY = "drain:slot:{}:job"
_HEARTBEAT_KEY = "drain:slot:{}:heartbeat"
# A job that started this recently may not have sent its first heartbeat yet.
_STARTUP_GRACE = timedelta(seconds=15)


def heartbeat(client: redis.Redis, slot: int, settings: Settings) -> None:
    """Mark the slot's drain as alive for a little longer than one blocking read."""
    client.set(_HEARTBEAT_KEY.format(slot), "1", px=settings.drain_block_ms * 3 + 2000)


def desired_slots(connection: redis.Redis, settings: Settings) -> int:
    """Return how many drains should run: one per worker listening on the drain queue."""
    workers = Worker.all(connection=connection, queue=Queue(DRAIN_QUEUE, connection=connection))
    return max(1, min(len(workers), settings.drain_max_concurrency))


def _slot_is_busy(connection: redis.Redis, slot: int) -> bool:
    if connection.exists(_HEARTBEAT_KEY.format(slot)):
        return True
    job_id = connection.get(_JOB_KEY.format(slot))
    if not job_id:
        return False
    try:
        job = Job.fetch(job_id.decode(), connection=connection)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        return True
    if status == JobStatus.STARTED and job.started_at:
        started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        return datetime.now(UTC) - started < _STARTUP_GRACE
    return False


def _enqueue(connection: redis.Redis, slot: int, settings: Settings) -> Job:
    job = Queue(DRAIN_QUEUE, connection=connection).enqueue(
        DRAIN_JOB,
        kwargs={"slot": slot},
        job_timeout=settings.drain_job_seconds + 120,
        result_ttl=300,
        failure_ttl=7 * 24 * 3600,
        description=f"drain the telemetry stream (slot {slot})",
    )
    connection.set(_JOB_KEY.format(slot), job.id)
    return job


def ensure_drain_jobs() -> list[int]:
    """Scheduler job: enqueue a drain for every slot that has none alive; return the slots started."""
    settings = Settings.from_env()
    connection = rq_client(settings)
    started = []
    for slot in range(desired_slots(connection, settings)):
        if not _slot_is_busy(connection, slot):
            _enqueue(connection, slot, settings)
            started.append(slot)
    return started


def enqueue_successor(slot: int, settings: Settings) -> Job | None:
    """Called by a finishing drain job: hand the slot to a new job unless it is no longer wanted."""
    from rq import get_current_job

    connection = rq_client(settings)
    current = get_current_job()
    if slot >= desired_slots(connection, settings):
        return None
    key = _JOB_KEY.format(slot)
    if current is not None:
        owner = connection.get(key)
        if owner and owner.decode() != current.id:
            return None  # the scheduler already gave the slot to another job
    return _enqueue(connection, slot, settings)

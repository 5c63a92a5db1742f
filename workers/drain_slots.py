"""Keep drain jobs running: one per slot, as many slots as there are workers on the drain queue.

Every shard belongs to a slot: slot s drains shards s, s + n, s + 2n... of n slots (with more
slots than shards, slot s drains shard s mod shards beside other slots: the consumer group splits
the entries), so however many workers run, every shard is drained.

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
from common.streams import drain_slot_heartbeat_key, drain_slot_job_key

DRAIN_QUEUE = "drain"
MAINTENANCE_QUEUE = "maintenance"
DRAIN_JOB = "workers.drain.drain_stream"
# A job that started this recently may not have sent its first heartbeat yet.
_STARTUP_GRACE = timedelta(seconds=15)


def shards_of_slot(slot: int, slots: int, shards: int) -> list[int]:
    """Return the shards drain slot ``slot`` of ``slots`` drains."""
    if slots >= shards:
        return [slot % shards]
    return list(range(slot, shards, slots))


def heartbeat(client: redis.Redis, slot: int, settings: Settings) -> None:
    """Mark the slot's drain as alive for a little longer than one blocking read."""
    client.set(drain_slot_heartbeat_key(slot), "1", px=settings.drain_block_ms * 3 + 2000)


def desired_slots(connection: redis.Redis, settings: Settings) -> int:
    """Return how many drains should run: one per worker listening on the drain queue."""
    workers = Worker.all(connection=connection, queue=Queue(DRAIN_QUEUE, connection=connection))
    return max(1, min(len(workers), settings.drain_max_concurrency))


def _slot_is_busy(connection: redis.Redis, slot: int) -> bool:
    if connection.exists(drain_slot_heartbeat_key(slot)):
        return True
    job_id = connection.get(drain_slot_job_key(slot))
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


def _enqueue(connection: redis.Redis, slot: int, settings: Settings, slots: int) -> Job:
    job = Queue(DRAIN_QUEUE, connection=connection).enqueue(
        DRAIN_JOB,
        kwargs={"slot": slot, "slots": slots},
        job_timeout=settings.drain_job_seconds + 120,
        result_ttl=300,
        failure_ttl=7 * 24 * 3600,
        description=f"drain the telemetry stream (slot {slot})",
    )
    connection.set(drain_slot_job_key(slot), job.id)
    return job


def ensure_drain_jobs() -> list[int]:
    """Scheduler job: enqueue a drain for every slot that has none alive; return the slots started."""
    settings = Settings.from_env()
    connection = rq_client(settings)
    started = []
    slots = desired_slots(connection, settings)
    for slot in range(slots):
        if not _slot_is_busy(connection, slot):
            _enqueue(connection, slot, settings, slots)
            started.append(slot)
    return started


def enqueue_successor(slot: int, settings: Settings) -> Job | None:
    """Called by a finishing drain job: hand the slot to a new job unless it is no longer wanted."""
    from rq import get_current_job

    connection = rq_client(settings)
    current = get_current_job()
    slots = desired_slots(connection, settings)
    if slot >= slots:
        return None
    key = drain_slot_job_key(slot)
    if current is not None:
        owner = connection.get(key)
        if owner and owner.decode() != current.id:
            return None  # the scheduler already gave the slot to another job
    return _enqueue(connection, slot, settings, slots)

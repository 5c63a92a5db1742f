"""The scheduler: what it enqueues, that it keeps going through a Redis outage, and the jobs themselves."""

from __future__ import annotations

import logging
import threading
import time

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from common.redis_clients import rq_client
from common.streams import CONSUMER_GROUP, STREAM_KEY
from scheduler import jobs
from scheduler.__main__ import build_scheduler, run
from scheduler.rollups import ROLLUPS_QUEUE
from tests.conftest import meter
from workers.drain_slots import MAINTENANCE_QUEUE

EXPECTED = {
    "workers.drain_slots.ensure_drain_jobs": 2,
    "scheduler.jobs.maintain_partitions": 3600,
    "scheduler.jobs.reclaim_stale_entries": 30,
    "scheduler.jobs.trim_stream": 10,
}
# The rollup maintenance runs on its own queue (the rollups worker), never on the drain's workers.
ROLLUP_JOBS = {"scheduler.rollups.maintain_rollups": 30}


@pytest.fixture
def job_env(monkeypatch, settings):
    """Point the jobs (which read the environment, as in a worker) at the test servers."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RECLAIM_IDLE_SECONDS", str(settings.reclaim_idle_seconds))
    monkeypatch.setenv("DEAD_LETTER_AFTER", str(settings.dead_letter_after))


def test_every_maintenance_job_is_scheduled_on_an_interval_so_no_time_zone_matters():
    scheduler = build_scheduler(fakeredis.FakeRedis())
    jobs_by_name = {job.func_name: job for job in scheduler.get_jobs()}
    assert {name: job.interval for name, job in jobs_by_name.items()} == EXPECTED | ROLLUP_JOBS
    assert all(job.cron is None for job in jobs_by_name.values())
    assert {job.queue_name for name, job in jobs_by_name.items() if name in EXPECTED} == {MAINTENANCE_QUEUE}
    assert jobs_by_name["scheduler.rollups.maintain_rollups"].queue_name == ROLLUPS_QUEUE


def test_the_loop_enqueues_the_jobs_and_stops_when_asked(settings, redis_client):
    connection = rq_client(settings)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(build_scheduler(connection), stop))
    thread.start()
    try:
        queue = Queue(MAINTENANCE_QUEUE, connection=connection)
        deadline = time.monotonic() + 20
        while {job.func_name for job in queue.get_jobs()} != set(EXPECTED):
            assert time.monotonic() < deadline, [job.func_name for job in queue.get_jobs()]
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_the_loop_waits_out_a_redis_outage_instead_of_crashing(caplog):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    stop = threading.Event()
    errors = []

    def target():
        try:
            run(build_scheduler(dead), stop)
        except Exception as exc:  # noqa: BLE001 - the test fails on any
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="scheduler")
    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 20
    while sum("redis unavailable" in r.getMessage() for r in caplog.records) < 2:
        assert time.monotonic() < deadline, "the scheduler never retried"
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert errors == []


def test_partition_job_reports_what_it_did(job_env, db):
    result = jobs.maintain_partitions()
    assert result["created"] == 0  # the release step made them already
    assert result["dropped"] == []


def test_trim_and_reclaim_jobs_run_against_the_configured_servers(job_env, settings, client, db, redis_client):
    from workers.drain import StreamDrainer

    for i in range(5):  # an entry each
        client.post("/v1/telemetry", json=meter(f"m{i}"))
    victim = StreamDrainer(settings, redis_client, "victim")
    victim.ensure_group()
    victim.read_new()
    deadline = time.monotonic() + 30
    while True:
        result = jobs.reclaim_stale_entries()
        if result["reclaimed"]:
            break
        assert time.monotonic() < deadline, "entries never became idle"
        time.sleep(0.1)
    assert result["entries_acked"] == 5
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 5
    assert jobs.trim_stream()["evicted"] == 5  # all acknowledged: the whole (only) node goes
    assert redis_client.xlen(STREAM_KEY) == 0
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0

"""End to end: gunicorn, an rq worker and rq cron from the Procfile, HTTP in, rows out in Postgres."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from common.streams import CONSUMER_GROUP, STREAM_KEY
from tests.conftest import bearer, meter, minutes_ago, vehicle
from tests.processes import Process, free_port, port_answers, process_env, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(settings, db, redis_client, tmp_path, admin_token):
    """Start web, worker and scheduler; yield a handle with the port and a way to add workers."""
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port,
                      DRAIN_JOB_SECONDS="10", RECLAIM_IDLE_SECONDS="2", DRAIN_BLOCK_MS="200",
                      # Small batches, so that a kill lands in the middle of the drain.
                      DRAIN_BATCH_SIZE="50")
    procs: dict[str, list[Process]] = {"web": [], "worker": [], "scheduler": []}

    def start(name):
        p = Process(name, env, tmp_path)
        procs[name].append(p)
        return p

    start("web")
    start("worker")
    start("scheduler")
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
    except AssertionError:
        raise AssertionError(procs["web"][0].output()) from None

    class Stack:
        pass

    s = Stack()
    s.port, s.procs, s.start, s.token = port, procs, start, admin_token
    yield s
    for group in procs.values():
        for p in group:
            p.stop()


def post(stack, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}/v1/telemetry", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **bearer(stack.token)}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def get(stack, path):
    request = urllib.request.Request(f"http://127.0.0.1:{stack.port}{path}", headers=bearer(stack.token))
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def counts(db):
    return db.execute(
        "SELECT (SELECT count(*) FROM meter_readings), (SELECT count(*) FROM vehicle_readings)"
    ).fetchone()


def test_a_thousand_mixed_readings_reach_postgres(stack, db, redis_client):
    batch = [meter(f"m{i}", kwh=i, ts=minutes_ago(1)) for i in range(500)]
    batch += [vehicle(f"v{i}", soc=i % 100, ts=minutes_ago(1)) for i in range(500)]
    started = time.monotonic()
    status, body = post(stack, batch)
    assert (status, body) == (202, {"accepted": 1000, "meters": 500, "vehicles": 500})
    wait_for(lambda: counts(db) == (500, 500), 60, message="1,000 rows in Postgres")
    print(f"1,000 mixed readings committed {time.monotonic() - started:.2f}s after the POST")
    status, latest = get(stack, "/v1/vehicles/v7/latest")
    assert status == 200
    assert latest == {"vehicleId": "v7", "soc": 7.0, "kwhDeliveredDc": 8.0, "batteryTemp": 30.0,
                      "timestamp": batch[507]["timestamp"]}
    assert db.execute("SELECT count(*) FROM vehicle_latest").fetchone()[0] == 500
    wait_for(lambda: redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0, 30, message="no pending")


def test_killing_the_worker_mid_drain_loses_and_duplicates_nothing(stack, db, redis_client):
    # A backlog first, the worker stopped: a drain that keeps up would be done before the last POST.
    stack.procs["worker"][0].stop()
    total = 0
    for b in range(40):
        batch = [meter(f"m{b}-{i}", kwh=i, ts=minutes_ago(2)) for i in range(500)]
        batch += [vehicle(f"v{b}-{i}", ts=minutes_ago(2)) for i in range(500)]
        assert post(stack, batch)[0] == 202
        total += 1000
    assert sum(counts(db)) == 0
    worker = stack.start("worker")
    # Kill the worker (and its work horse) as soon as it has written some but not all rows.
    wait_for(lambda: sum(counts(db)) > 0, 60, interval=0.01, message="the drain to start")
    worker.kill()
    written_at_kill = sum(counts(db))
    print(f"worker killed with {written_at_kill} of {total} rows written")
    assert written_at_kill < total, "the kill came after the drain had finished; it proves nothing"
    stack.start("worker")
    wait_for(lambda: sum(counts(db)) == total, 90, message=f"all {total} rows after the kill")
    wait_for(lambda: redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0, 60, message="no pending")
    dupes = db.execute(
        "SELECT count(*) - count(DISTINCT (meter_id, ts)) FROM meter_readings"
    ).fetchone()[0]
    assert dupes == 0
    assert counts(db) == (total // 2, total // 2)

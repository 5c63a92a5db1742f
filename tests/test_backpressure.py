"""Backpressure: ingest answers 503 + Retry-After and writes nothing past the limits, then recovers."""

from __future__ import annotations

import dataclasses

import pytest

from common.metrics import StreamLoad
from common.streams import CONSUMER_GROUP, STREAM_KEY
from tests.conftest import keyed_client, meter, stored_answer, vehicle
from tests.reliability.servers import PrivateRedis
from web.backpressure import BackpressureGate
from workers.drain import StreamDrainer


@pytest.fixture
def tight_app(settings, db, redis_client):
    """The app with a backlog limit of 5 readings, checked on every request."""
    from web import create_app

    app = create_app(dataclasses.replace(settings, backlog_limit=5, backpressure_check_ms=0,
                                         backpressure_retry_after_seconds=7))
    app.config["TESTING"] = True
    return app


def test_ingest_is_refused_past_the_backlog_and_recovers_once_drained(
        settings, tight_app, db, redis_client, admin_token):
    client = keyed_client(tight_app, admin_token, cache_from=settings)
    for i in range(6):  # six requests: six stream entries
        assert client.post("/v1/telemetry", json=meter(f"m{i}")).status_code == 202
    length = redis_client.xlen(STREAM_KEY)

    refused = client.post("/v1/telemetry", json=[vehicle("v1"), meter("m9")])

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "7"
    body = refused.get_json()
    assert body["error"] == "overloaded"
    assert body["reason"] == "backlog"
    assert (body["backlog"], body["limit"]) == (6, 5)
    assert redis_client.xlen(STREAM_KEY) == length  # nothing written
    assert not redis_client.exists("latest:vehicle:v1")

    drainer = StreamDrainer(settings, redis_client, "bp-test")
    drainer.ensure_group()
    try:
        drainer.drain_once(block_ms=10)
    finally:
        drainer.close()
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0

    assert client.post("/v1/telemetry", json=[vehicle("v1"), meter("m9")]).status_code == 202
    assert stored_answer(redis_client, "latest:vehicle:v1")["soc"] == 50.0


def test_pending_entries_count_in_the_backlog(settings, tight_app, redis_client, admin_token):
    client = keyed_client(tight_app, admin_token, cache_from=settings)
    for i in range(6):
        client.post("/v1/telemetry", json=meter(f"m{i}"))
    # A drain read them but has not committed: they are still owed to Postgres.
    reader = StreamDrainer(settings, redis_client, "reader")
    reader.ensure_group()
    assert len(reader.read_new()) == 6
    response = client.post("/v1/telemetry", json=meter("m7"))
    assert response.status_code == 503
    assert response.get_json()["backlog"] == 6


def test_the_check_is_cached_between_intervals(settings, redis_client):
    calls = []

    class CountingClient:
        def __init__(self, real):
            self.real = real

        def pipeline(self, **kw):
            calls.append(1)
            return self.real.pipeline(**kw)

    now = [100.0]
    every_250ms = dataclasses.replace(settings, backpressure_check_ms=250)
    gate = BackpressureGate(lambda: CountingClient(redis_client), every_250ms, clock=lambda: now[0])
    for _ in range(50):
        gate.overload()
    assert len(calls) == 1
    now[0] += 0.3
    gate.overload()
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("load", "reason"),
    [
        (StreamLoad(length=10, undelivered=3, pending=2, used_memory=1, maxmemory=0), None),
        (StreamLoad(length=10, undelivered=4, pending=2, used_memory=1, maxmemory=0), "backlog"),
        # The lag is unknown (entries deleted inside the range): XLEN stands in for it.
        (StreamLoad(length=6, undelivered=None, pending=0, used_memory=1, maxmemory=0), "backlog"),
        (StreamLoad(length=0, undelivered=0, pending=0, used_memory=90, maxmemory=100), "redis_memory"),
        (StreamLoad(length=0, undelivered=0, pending=0, used_memory=89, maxmemory=100), None),
    ],
)
def test_judgement(settings, load, reason):
    gate = BackpressureGate(lambda: None, dataclasses.replace(settings, backlog_limit=5, redis_memory_limit_ratio=0.9))
    overload = gate.judge(load)
    assert (overload.reason if overload else None) == reason


def test_redis_near_maxmemory_refuses_ingest_until_memory_is_freed(settings, tmp_path, admin_token):
    """A private Redis (its maxmemory is ours to change) close to full: 503, then 202 once it has room."""
    from web import create_app

    server = PrivateRedis(tmp_path)
    server.start()
    try:
        admin = server.client()
        app = create_app(dataclasses.replace(settings, redis_url=server.url(0), backpressure_check_ms=0))
        client = keyed_client(app, admin_token, cache_from=settings)
        assert client.post("/v1/telemetry", json=meter("m1")).status_code == 202
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(int(used / 0.95)))  # used is now 95% of the limit

        refused = client.post("/v1/telemetry", json=meter("m2"))
        assert refused.status_code == 503
        assert refused.get_json()["reason"] == "redis_memory"
        assert "Retry-After" in refused.headers
        assert admin.xlen(STREAM_KEY) == 1

        admin.config_set("maxmemory", "0")
        assert client.post("/v1/telemetry", json=meter("m2")).status_code == 202
        assert admin.xlen(STREAM_KEY) == 2
    finally:
        server.stop()


def test_refused_readings_are_counted_by_kind(settings, tight_app, redis_client, admin_token):
    from common import metrics

    client = keyed_client(tight_app, admin_token, cache_from=settings)
    for i in range(6):
        client.post("/v1/telemetry", json=meter(f"m{i}"))
    client.post("/v1/telemetry", json=[vehicle("v1"), vehicle("v2"), meter("m9"), {"x": 1}])
    tight_app.extensions["metrics_buffer"].flush()
    counters = metrics.read_counters(redis_client)
    assert counters["readings_rejected"] == {("vehicle", "overloaded"): 2, ("meter", "overloaded"): 1,
                                            ("unknown", "overloaded"): 1}
    assert counters["readings_accepted"] == {("meter",): 6}

"""Redis stays bounded: latest hashes expire after LATEST_TTL_DAYS, and a stopped trim cannot grow the stream."""

from __future__ import annotations

import dataclasses

import pytest

from common.streams import METER, STREAM_KEY, VEHICLE, latest_key
from tests.conftest import keyed_client, meter, minutes_ago, stored_answer, vehicle
from tests.processes import wait_for
from tests.test_latest_reads import put_meter_latest, put_vehicle_latest
from workers.drain import StreamDrainer

DAY = 86400


@pytest.fixture
def ttl_app(settings, db, redis_client):
    """The app with a 3-day latest TTL."""
    from web import create_app

    app = create_app(dataclasses.replace(settings, latest_ttl_days=3))
    app.config["TESTING"] = True
    return app


def test_ingest_sets_the_ttl_and_every_reading_refreshes_it(ttl_app, redis_client, admin_token):
    client = keyed_client(ttl_app, admin_token)
    assert client.post("/v1/telemetry", json=[meter("m1"), vehicle("v1")]).status_code == 202
    for key in (latest_key(METER, "m1"), latest_key(VEHICLE, "v1")):
        assert 3 * DAY - 60 < redis_client.ttl(key) <= 3 * DAY
    redis_client.expire(latest_key(VEHICLE, "v1"), 100)
    # An older reading does not move the hash, but the device spoke: its time to live starts again.
    assert client.post("/v1/telemetry", json=vehicle("v1", soc=1.0, ts=minutes_ago(30))).status_code == 202
    assert redis_client.ttl(latest_key(VEHICLE, "v1")) > 3 * DAY - 60
    assert stored_answer(redis_client, latest_key(VEHICLE, "v1"))["soc"] == 50.0


def test_a_postgres_refill_sets_the_ttl(ttl_app, db, redis_client, admin_token):
    client = keyed_client(ttl_app, admin_token)
    put_meter_latest(db, "m1", minutes_ago(10), kwh=5.0, voltage=230.0)
    put_vehicle_latest(db, "v1", minutes_ago(10), soc=40.0)
    put_vehicle_latest(db, "v2", minutes_ago(10), soc=41.0)
    assert client.get("/v1/meters/m1/latest").status_code == 200
    assert client.get("/v1/vehicles/latest?ids=v1,v2").get_json()["missing"] == []
    for key in (latest_key(METER, "m1"), latest_key(VEHICLE, "v1"), latest_key(VEHICLE, "v2")):
        assert 3 * DAY - 60 < redis_client.ttl(key) <= 3 * DAY, key


def test_the_rebuild_refill_sets_the_ttl(ttl_app, db, redis_client):
    from web.latest import rebuild_latest

    put_vehicle_latest(db, "v1", minutes_ago(10), soc=40.0)
    with db.transaction():  # the rebuild reads through a server-side cursor
        rebuild_latest(db, ttl_app.extensions["latest_state"])
    assert 3 * DAY - 60 < redis_client.ttl(latest_key(VEHICLE, "v1")) <= 3 * DAY


def test_an_expired_device_reads_from_postgres(settings, ttl_app, db, redis_client, admin_token):
    client = keyed_client(ttl_app, admin_token)
    ts = minutes_ago(5)
    assert client.post("/v1/telemetry", json=vehicle("v1", soc=66.0, ts=ts)).status_code == 202
    drainer = StreamDrainer(settings, redis_client, "ttl-test")
    drainer.ensure_group()
    try:
        wait_for(lambda: drainer.drain_once(block_ms=10) is not None
                 and db.execute("SELECT count(*) FROM vehicle_latest").fetchone()[0] == 1,
                 timeout=20, message="the drain to write vehicle_latest")
    finally:
        drainer.close()
    key = latest_key(VEHICLE, "v1")
    redis_client.pexpire(key, 1)  # the device's time to live runs out
    wait_for(lambda: not redis_client.exists(key), timeout=5, message="the latest hash to expire")

    assert client.get("/v1/vehicles/v1/latest").get_json()["soc"] == 66.0
    assert client.get("/v1/vehicles/latest?ids=v1").get_json()["vehicles"][0]["soc"] == 66.0
    assert redis_client.ttl(key) > 3 * DAY - 60  # back in Redis, with its time to live


def test_backpressure_trips_on_stream_length_with_the_trim_stopped(settings, db, redis_client, admin_token):
    """Everything is drained and acknowledged (backlog 0), but nobody trims: the stream's length stops ingest."""
    from web import create_app

    app = create_app(dataclasses.replace(settings, stream_length_limit=2, backlog_limit=1000,
                                         backpressure_check_ms=0))
    client = keyed_client(app, admin_token)
    drainer = StreamDrainer(settings, redis_client, "length-test")
    drainer.ensure_group()
    try:
        for i in range(3):
            assert client.post("/v1/telemetry", json=[meter(f"m{i}-{j}") for j in range(3)]).status_code == 202
            wait_for(lambda: drainer.drain_once(block_ms=10) is not None
                     and redis_client.xpending(STREAM_KEY, "drain")["pending"] == 0
                     and not redis_client.xinfo_groups(STREAM_KEY)[0]["lag"],
                     timeout=20, message="the drain to acknowledge everything")
    finally:
        drainer.close()
    assert redis_client.xlen(STREAM_KEY) == 3  # one entry per request

    refused = client.post("/v1/telemetry", json=meter("late"))
    assert refused.status_code == 503
    body = refused.get_json()
    assert (body["error"], body["reason"], body["streamLength"], body["limit"]) == ("overloaded", "stream_length", 3, 2)
    assert "Retry-After" in refused.headers
    assert redis_client.xlen(STREAM_KEY) == 3  # one entry per request

    from workers.stream_maintenance import trim_stream

    trim_stream(redis_client, approximate=False)
    assert client.post("/v1/telemetry", json=meter("late")).status_code == 202

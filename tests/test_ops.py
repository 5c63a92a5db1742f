"""Health, readiness, /metrics (parsed with prometheus_client's parser) and the JSON log lines."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.logging import JsonFormatter
from common.streams import CONSUMER_GROUP, DEAD_LETTER_STREAM_KEY, STREAM_KEY
from tests.conftest import bearer, create_test_key, keyed_client, meter, minutes_ago, vehicle
from tests.processes import Process, free_port, port_answers, process_env, wait_for
from workers.drain import StreamDrainer

CLOSED = "127.0.0.1:1"  # nothing listens on port 1


def scrape(client) -> dict[tuple[str, tuple], float]:
    """GET /metrics and return {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.get_data(as_text=True))


def parse(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_healthz_answers_without_touching_any_server(settings, admin_token):
    from web import create_app

    app = create_app(dataclasses.replace(settings, redis_url=f"redis://{CLOSED}/0",
                                         database_url=f"postgresql://{CLOSED}/none"))
    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def as_metrics_caller(app, settings):
    """Return a test client of ``app`` that sends a key holding only the ``metrics`` scope (Prometheus's)."""
    return keyed_client(app, create_test_key(settings, scopes=["metrics"]), cache_from=settings)


def test_readyz_is_ready_when_both_servers_answer(app, settings):
    response = as_metrics_caller(app, settings).get("/readyz")
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "ready"
    assert body["checks"]["redis"]["ok"] and body["checks"]["postgres"]["ok"]


@pytest.mark.parametrize("down", ["redis", "postgres"])
def test_readyz_names_the_server_that_is_down(settings, down, admin_token):
    from web import create_app

    broken = {"redis": {"redis_url": f"redis://{CLOSED}/0"},
              "postgres": {"database_url": f"postgresql://{CLOSED}/none"}}[down]
    app = create_app(dataclasses.replace(settings, **broken))
    response = keyed_client(app, admin_token, cache_from=settings).get("/readyz")
    body = response.get_json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"][down]["ok"] is False
    assert body["checks"][down]["error"]
    up = "postgres" if down == "redis" else "redis"
    assert body["checks"][up]["ok"] is True


def test_metrics_numbers_match_what_was_sent_and_drained(settings, app, client, db, redis_client):
    for reading in (meter("m1"), meter("m2"), meter("m3"), vehicle("v1"), vehicle("v2")):  # an entry each
        assert client.post("/v1/telemetry", json=reading).status_code == 202
    invalid = [meter("m4", voltage=-1), vehicle("v3"), {"neither": True}]
    assert client.post("/v1/telemetry", json=invalid).status_code == 400
    # A poison entry (no partition for the year 2000) that the drain will dead-letter.
    redis_client.xadd(STREAM_KEY, {"k": "m", "r": "poison\t2000-01-01T00:00:00+00:00\t1.0\t230.0"})

    before = scrape(client)
    assert before[("energy_stream_backlog", ())] == 6
    assert before[("energy_stream_undelivered", ())] == 6
    assert before[("energy_stream_pending_entries", ())] == 0

    drainer = StreamDrainer(settings, redis_client, "metrics-test")
    drainer.ensure_group()
    deadline = time.monotonic() + 30
    try:
        while redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 0 or \
                redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"]:
            assert time.monotonic() < deadline, "the stream did not drain"
            drainer.drain_once(block_ms=50)
    finally:
        drainer.close()

    m = scrape(client)
    assert m[("energy_up", (("server", "redis"),))] == 1
    assert m[("energy_up", (("server", "postgres"),))] == 1
    assert m[("energy_readings_accepted_total", (("kind", "meter"),))] == 3
    assert m[("energy_readings_accepted_total", (("kind", "vehicle"),))] == 2
    assert m[("energy_readings_rejected_total", (("kind", "meter"), ("reason", "invalid")))] == 1
    assert m[("energy_readings_rejected_total", (("kind", "vehicle"), ("reason", "invalid")))] == 1
    assert m[("energy_readings_rejected_total", (("kind", "unknown"), ("reason", "invalid")))] == 1
    assert m[("energy_readings_rejected_total", (("kind", "meter"), ("reason", "overloaded")))] == 0
    assert m[("energy_rows_written_total", ())] == 5 == drainer.totals.rows_written
    assert m[("energy_entries_acked_total", ())] == 5
    assert m[("energy_dead_lettered_total", ())] == 1
    assert m[("energy_dead_letters", ())] == 1
    assert m[("energy_drain_write_failures_total", ())] == settings.dead_letter_after
    # Two batches committed the five good entries (a drain's first read takes one entry: it does not know
    # yet how many readings an entry holds); the poison's later tries committed nothing.
    assert m[("energy_drain_batches_total", ())] == 2
    assert m[("energy_drain_batch_duration_seconds_count", ())] == 2
    assert m[("energy_drain_batch_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert m[("energy_drain_batch_duration_seconds_sum", ())] > 0
    assert m[("energy_stream_pending_entries", ())] == 0
    assert m[("energy_stream_backlog", ())] == 0
    assert m[("energy_stream_oldest_pending_age_seconds", ())] == 0
    assert m[("energy_ingest_overloaded", ())] == 0
    # The session database is shared with other tests, which may add days: compare with what exists.
    for table in ("meter_readings", "vehicle_readings"):
        ahead, behind = db.execute(
            "SELECT count(*) FILTER (WHERE day > (now() AT TIME ZONE 'UTC')::date),"
            " count(*) FILTER (WHERE day < (now() AT TIME ZONE 'UTC')::date) FROM daily_partitions(%s::regclass)",
            (table,)).fetchone()
        assert m[("energy_partitions_ahead", (("table", table),))] == ahead >= settings.partition_premake_days
        assert m[("energy_partitions_behind", (("table", table),))] == behind >= settings.retention_days
        assert m[("energy_partition_today", (("table", table),))] == 1


def test_oldest_pending_age_is_the_age_of_the_oldest_unacknowledged_entry(client, redis_client):
    two_minutes_ago = int(time.time() * 1000) - 120_000
    redis_client.xadd(STREAM_KEY, {"k": "m", "r": "a"}, id=f"{two_minutes_ago}-0")
    redis_client.xadd(STREAM_KEY, {"k": "m", "r": "b"}, id=f"{two_minutes_ago + 60_000}-0")
    redis_client.xadd(STREAM_KEY, {"k": "m", "r": "c"})
    redis_client.xgroup_create(STREAM_KEY, CONSUMER_GROUP, id="0")
    redis_client.xreadgroup(CONSUMER_GROUP, "stuck", {STREAM_KEY: ">"}, count=2)
    m = scrape(client)
    assert 119 <= m[("energy_stream_oldest_pending_age_seconds", ())] < 180
    assert m[("energy_stream_pending_entries", ())] == 2
    assert m[("energy_stream_undelivered", ())] == 1
    assert m[("energy_stream_backlog", ())] == 3
    redis_client.xack(STREAM_KEY, CONSUMER_GROUP, f"{two_minutes_ago}-0")
    assert 59 <= scrape(client)[("energy_stream_oldest_pending_age_seconds", ())] < 120


def test_metrics_still_answer_when_postgres_is_down(settings, redis_client, admin_token):
    from web import create_app

    app = create_app(dataclasses.replace(settings, database_url=f"postgresql://{CLOSED}/none"))
    m = scrape(keyed_client(app, admin_token, cache_from=settings))
    assert m[("energy_up", (("server", "postgres"),))] == 0
    assert m[("energy_up", (("server", "redis"),))] == 1
    assert ("energy_stream_backlog", ()) in m
    assert not any(name == "energy_partitions_ahead" for name, _ in m)


def test_metrics_still_answer_when_redis_is_down(settings, db, admin_token):
    from web import create_app

    app = create_app(dataclasses.replace(settings, redis_url=f"redis://{CLOSED}/0"))
    m = scrape(keyed_client(app, admin_token, cache_from=settings))
    assert m[("energy_up", (("server", "redis"),))] == 0
    assert m[("energy_up", (("server", "postgres"),))] == 1


def test_a_failed_request_logs_one_json_line_with_id_route_status_and_duration(client, caplog):
    caplog.set_level(logging.INFO, logger="web.request")
    response = client.get("/v1/meters/nobody/latest", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "abc-123"
    [record] = [r for r in caplog.records if r.name == "web.request"]
    line = json.loads(JsonFormatter("web").format(record))
    assert line["msg"] == "request"
    assert line["request_id"] == "abc-123"
    assert line["route"] == "/v1/meters/<meter_id>/latest"
    assert line["status"] == 404
    assert line["duration_ms"] >= 0
    assert line["process"] == "web" and line["level"] == "info"


def test_a_successful_request_logs_no_line_at_info_but_one_at_debug(client, caplog):
    caplog.set_level(logging.INFO, logger="web.request")
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/telemetry", json=meter(ts=minutes_ago(1))).status_code == 202
    assert [r for r in caplog.records if r.name == "web.request"] == []
    caplog.set_level(logging.DEBUG, logger="web.request")
    response = client.get("/healthz")
    [record] = [r for r in caplog.records if r.name == "web.request"]
    assert (record.levelno, record.status, record.request_id) == (logging.DEBUG, 200, response.headers["X-Request-ID"])


def test_a_bad_request_id_is_replaced(client):
    response = client.get("/healthz", headers={"X-Request-ID": "no spaces; or {braces}" + "x" * 200})
    assert len(response.headers["X-Request-ID"]) == 24


def test_ingest_logs_nothing_per_reading(client, caplog):
    # A first request opens the connections (the key lookup's, Redis's), which log at DEBUG once.
    client.post("/v1/telemetry", json=meter("m-warm", ts=minutes_ago(2)))
    caplog.set_level(logging.DEBUG)
    client.post("/v1/telemetry", json=[meter(f"m{i}", ts=minutes_ago(1)) for i in range(200)])
    # The request line (and at most one more), not 200; another test's pool retrying its dead server is not ours.
    assert len([r for r in caplog.records if r.name != "psycopg.pool"]) <= 2


def test_drain_logs_one_line_per_batch_with_size_rows_duration_and_lag(settings, client, redis_client, db, caplog):
    caplog.set_level(logging.DEBUG, logger="workers.drain")
    client.post("/v1/telemetry", json=[meter(f"m{i}", ts=minutes_ago(1)) for i in range(30)])
    drainer = StreamDrainer(settings, redis_client, "log-test")
    drainer.ensure_group()
    try:
        drainer.drain_once(block_ms=10)
    finally:
        drainer.close()
    [record] = [r for r in caplog.records if r.getMessage() == "drained batch"]
    line = json.loads(JsonFormatter("worker").format(record))
    # One request: one stream entry holding its 30 readings.
    assert (line["batch_size"], line["rows"], line["committed"]) == (1, 30, 1)
    assert line["duration_ms"] > 0
    assert line["lag_seconds"] >= 0


@pytest.mark.e2e
def test_metrics_are_deployment_wide_with_several_gunicorn_workers(settings, db, redis_client, tmp_path,
                                                                   admin_token):
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port)
    env["WEB_CONCURRENCY"] = "3"
    web = Process("web", env, tmp_path)
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
        sent = 0
        for i in range(60):  # many connections, so that every worker serves some
            body = json.dumps([meter(f"m{i}"), vehicle(f"v{i}")]).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/telemetry", data=body, method="POST",
                                             headers={"Content-Type": "application/json", **bearer(admin_token)})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 202
            sent += 1

        def accepted():
            scrape = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=bearer(admin_token))
            with urllib.request.urlopen(scrape, timeout=10) as response:
                m = parse(response.read().decode())
            return (m[("energy_readings_accepted_total", (("kind", "meter"),))],
                    m[("energy_readings_accepted_total", (("kind", "vehicle"),))])

        # Workers that served no scrape flush their counts within a second.
        wait_for(lambda: accepted() == (sent, sent), 15, interval=0.2, message=f"{sent} readings of each kind")
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/v1/telemetry", data=b"[{}]", method="POST",
                                     headers={"Content-Type": "application/json", **bearer(admin_token)})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 400
        # Successful requests log no line each; a failed one does.
        wait_for(lambda: '"status": 400' in web.output().replace('":', '": '), 10, message="the 400's log line")
        logged = web.output().replace('":', '": ')
        assert '"route": "/v1/telemetry"' in logged and '"status": 202' not in logged
    finally:
        web.stop()

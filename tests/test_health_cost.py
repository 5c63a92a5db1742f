"""/readyz and /metrics are cheap (pooled connections, a cached probe) and tell strangers nothing.

Both need a key with the ``metrics`` scope (web/auth.py): a stranger gets a 401 that names no server.
"""

from __future__ import annotations

import dataclasses
import threading

import psycopg
import pytest

from tests.conftest import create_test_key, keyed_client
from tests.test_ops import CLOSED, as_metrics_caller


@pytest.fixture
def connects(monkeypatch):
    """Count every Postgres connection this process opens (the pool's included)."""
    opened = []
    original = psycopg.Connection.connect.__func__

    def counting(cls, *args, **kwargs):
        opened.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(counting))
    return opened


def _hammer(app, token: str, callers: int, requests: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def call():
        client = keyed_client(app, token)
        for _ in range(requests):
            status = client.get("/readyz").status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return statuses


@pytest.mark.parametrize("cache_seconds", [0.0, 1.0])
def test_readyz_under_8_concurrent_callers_opens_no_connection_per_request(app, settings, connects, cache_seconds):
    from web import db as web_db

    app.extensions["readiness"].interval = cache_seconds
    token = create_test_key(settings, scopes=["metrics"])
    keyed_client(app, token).get("/readyz")  # the process's pool opens on first use (and the key cache fills)
    web_db.get_pool(app).wait(timeout=10)
    before = len(connects)

    statuses = _hammer(app, token, callers=8, requests=10)

    assert statuses == [200] * 80
    # Every probe borrows from the pool (at most DB_POOL_MAX_SIZE connections ever), never its own.
    assert len(connects) - before <= app.config["DB_POOL_MAX_SIZE"]
    probes = app.extensions["readiness"].probes
    if cache_seconds:
        assert probes <= 3, probes  # 80 requests in a second or two share the cached probe
    else:
        assert probes > 3


@pytest.mark.parametrize("down", ["redis", "postgres"])
def test_anonymous_readyz_names_no_server(settings, down, caplog):
    from web import create_app

    broken = {"redis": {"redis_url": f"redis://{CLOSED}/0"},
              "postgres": {"database_url": f"postgresql://{CLOSED}/none"}}[down]
    app = create_app(dataclasses.replace(settings, **broken))
    response = app.test_client().get("/readyz")
    assert response.status_code == 401
    text = response.get_data(as_text=True)
    assert "127.0.0.1" not in text and ":1" not in text and "redis" not in text.lower()
    # The metrics scope gets the detail, and the operator's log has it too.
    response = as_metrics_caller(app, settings).get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"][down]["ok"] is False
    assert any("readiness probe failed" in r.getMessage() for r in caplog.records)


def test_anonymous_readyz_when_ready_says_nothing(app):
    response = app.test_client().get("/readyz")
    assert response.status_code == 401
    assert "status" not in response.get_json()


def test_readyz_detail_for_the_metrics_scope_is_cached(app, settings):
    client = as_metrics_caller(app, settings)
    first = client.get("/readyz").get_json()["checks"]
    assert client.get("/readyz").get_json()["checks"] == first  # the same probe, latency included
    assert app.extensions["readiness"].probes == 1


def test_metrics_opens_at_most_one_postgres_connection_per_scrape(app, settings, connects):
    client = as_metrics_caller(app, settings)
    for scrape in range(5):
        response = client.get("/metrics")
        assert response.status_code == 200
        assert "energy_partitions_ahead" in response.get_data(as_text=True)
        assert len(connects) <= 1, f"scrape {scrape} opened a connection of its own"

"""Fixtures: a private Postgres database and Redis db per test session, cleaned around each test.

The servers are TEST_DATABASE_URL / TEST_REDIS_URL when given, else the local ones when they answer,
else embedded PostgreSQL and Valkey under .data/ (common/embedded_servers.py). A session creates its
own database, and claims a Redis db that holds no keys with a lock key (SET NX, in one script with
the emptiness check), so two sessions on one machine never share one; it only ever flushes that db.
An explicit TEST_REDIS_URL is used as given (and flushed: whoever named it gave it to the tests);
TEST_REDIS_SERVER names the server to claim a db on.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import fakeredis
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from common.database import release
from common.embedded_servers import ensure_servers
from common.settings import Settings

EXPLICIT_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
EXPLICIT_REDIS_URL = os.environ.get("TEST_REDIS_URL")
# A Redis server to claim a db on (instead of the local or embedded one), e.g. a private server.
REDIS_SERVER_URL = os.environ.get("TEST_REDIS_SERVER")
TABLES = ("meter_readings", "vehicle_readings", "meter_latest", "vehicle_latest", "vehicle_meter_map",
          "reading_conflicts", "meter_hourly_rollups", "vehicle_hourly_rollups", "rollup_marks",
          "rollup_tails")
SESSION_LOCK_KEY = "energy-tests:session-lock"
SESSION_LOCK_SECONDS = 3600
SESSION_TOKEN = uuid.uuid4().hex
# db 0 is `make run`'s; the benchmark uses 8 and 13 by default.
_CLAIMABLE_DBS = (15, 14, 12, 11, 10, 9, 7, 6, 5, 4, 3, 2, 1)
# Claim a db only if it is empty, atomically; the lock key is the session's mark on it.
_CLAIM = "if redis.call('DBSIZE') == 0 then return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) end"
# Empty the session's own db and put its mark back in the same step, so no other session can claim it meanwhile.
_RESET = "redis.call('FLUSHDB') redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1"


def _with_db(url: str, db: int) -> str:
    return f"{url.rsplit('/', 1)[0]}/{db}" if url.rsplit("/", 1)[-1].isdigit() else f"{url.rstrip('/')}/{db}"


def claim_redis_db(base_url: str) -> str:
    """Return the URL of an empty Redis db this session now holds (its lock key set)."""
    for db in _CLAIMABLE_DBS:
        client = redis.Redis.from_url(_with_db(base_url, db))
        try:
            if client.eval(_CLAIM, 1, SESSION_LOCK_KEY, SESSION_TOKEN, SESSION_LOCK_SECONDS):
                return _with_db(base_url, db)
        finally:
            client.close()
    pytest.fail(f"no empty Redis db left to claim on {base_url} (every db 1-15 holds keys); set TEST_REDIS_URL")


def reset_redis_db(client: redis.Redis) -> None:
    """Empty the session's Redis db: keep the claim's lock key when the session claimed the db."""
    if EXPLICIT_REDIS_URL:
        client.flushdb()
    else:
        client.eval(_RESET, 1, SESSION_LOCK_KEY, SESSION_TOKEN, SESSION_LOCK_SECONDS)


@pytest.fixture(scope="session")
def servers():
    """Return (postgres server URL, redis URL of this session's own db)."""
    env = {"DATABASE_URL": EXPLICIT_DATABASE_URL or "", "REDIS_URL": EXPLICIT_REDIS_URL or REDIS_SERVER_URL or ""}
    choice = ensure_servers(env)
    pg_url = EXPLICIT_DATABASE_URL or make_conninfo(choice.database_url, dbname="postgres")
    redis_url = EXPLICIT_REDIS_URL or claim_redis_db(choice.redis_url)
    yield pg_url, redis_url
    if not EXPLICIT_REDIS_URL:
        client = redis.Redis.from_url(redis_url)
        if client.get(SESSION_LOCK_KEY) == SESSION_TOKEN.encode():
            client.flushdb()  # the db this session claimed, lock key included
        client.close()


def pytest_report_header(config):
    """Say which servers the session uses (the Redis db is chosen when the first test needs it)."""
    return f"test servers: TEST_DATABASE_URL={EXPLICIT_DATABASE_URL or '(auto)'} " \
           f"TEST_REDIS_URL={EXPLICIT_REDIS_URL or '(claims an empty db)'}"


# The Redis layouts a test module can ask to run against (``REDIS_LAYOUTS = ALL_LAYOUTS`` in it):
# one Redis with one stream (the default everywhere), one Redis with 8 shards, and a 3-master +
# 3-replica Redis Cluster with 8 shards (started once per session, on first use).
SINGLE, SINGLE_SHARDED, CLUSTER = "single", "single-8-shards", "cluster-8-shards"
ALL_LAYOUTS = (SINGLE, SINGLE_SHARDED, CLUSTER)
_LAYOUT_ENV = {SINGLE: {}, SINGLE_SHARDED: {"STREAM_SHARDS": "8"}, CLUSTER: {"STREAM_SHARDS": "8"}}


def pytest_generate_tests(metafunc):
    """Give every test its Redis layout: the module's REDIS_LAYOUTS, else the single Redis."""
    if "redis_layout" in metafunc.fixturenames:
        layouts = getattr(metafunc.module, "REDIS_LAYOUTS", (SINGLE,))
        metafunc.parametrize("redis_layout", layouts, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_layout(request) -> str:
    """The Redis layout of the test (see ALL_LAYOUTS)."""
    return getattr(request, "param", SINGLE)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A private 3-master + 3-replica Redis Cluster for the session (node logs printed if it fails to form)."""
    from tests.redis_cluster import RedisClusterNodes, available

    if not available():
        pytest.skip("redis-server/redis-cli are not installed")
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="session")
def settings(servers, redis_layout, request):
    """Settings pointing at a fresh database created for this session, migrated and partitioned."""
    server_url, redis_url = servers
    dbname = f"energy_test_{uuid.uuid4().hex[:10]}"
    database_url = make_conninfo(server_url, dbname=dbname)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RECLAIM_IDLE_SECONDS": "1",
        "DRAIN_BLOCK_MS": "100",
        "DRAIN_JOB_SECONDS": "5",
        "DEAD_LETTER_AFTER": "3",
        # The whole session shares one admin key and one client address: tests of the limits
        # themselves set their own (tests/test_rate_limits.py).
        "API_KEY_RATE_LIMIT": "1000000/minute",
        "AUTH_FAILURE_RATE_LIMIT": "1000000/minute",
        **_LAYOUT_ENV[redis_layout],
    }
    if redis_layout == CLUSTER:
        env["REDIS_CLUSTER_URL"] = request.getfixturevalue("redis_cluster").url
    s = Settings.from_env(env)
    release(s)  # creates the database, migrates, creates partitions
    yield s
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture
def db(settings):
    """An autocommit connection to the test database; every table is emptied after the test."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn
        # DELETE, not TRUNCATE: the tables are small and TRUNCATE must lock every daily partition.
        for table in TABLES:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))


@pytest.fixture
def redis_client(settings, request):
    """A decoded client on the session's Redis db (or its cluster), emptied before and after the test."""
    plain = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    reset_redis_db(plain)
    if settings.redis_cluster_url:
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        client = cluster.client()
        yield client
        cluster.flush()
        client.close()
    else:
        yield plain
    reset_redis_db(plain)
    plain.close()


@pytest.fixture
def redis_keys(settings):
    """The key space of the test's layout (shards, hash tags)."""
    from common.streams import KeySpace

    return KeySpace.for_settings(settings)


@pytest.fixture
def app(settings, db, redis_client):
    """The application on the real services."""
    from web import create_app

    application = create_app(settings)
    application.config["TESTING"] = True
    return application


@pytest.fixture(scope="session")
def admin_token(settings) -> str:
    """The token of an admin key in the session's database (for test clients and real processes)."""
    return create_test_key(settings, scopes=["admin"], name="tests: admin")


def create_test_key(settings, scopes=(), device=None, rate_limit=None, expires_at=None, name="tests") -> str:
    """Create a key straight in the database and return its token.

    ``device`` is ``"vehicle:ev-17"``, ``("vehicle", "ev-17")`` or ``{"kind": ..., "id": ...}``.
    """
    from web.keys import KeySpec, create_keys

    if isinstance(device, str):
        device = tuple(device.split(":", 1))
    elif isinstance(device, dict):
        device = (device["kind"], device["id"])
    spec = KeySpec(name, tuple(scopes) or (("ingest", "read") if device else ()), device, rate_limit, expires_at)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return create_keys(conn, [spec])[0]["token"]


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


class AuthActions:
    """Make keys and their headers in tests (like the Flask tutorial's AuthActions)."""

    def __init__(self, settings):
        self.settings = settings

    def create_key(self, scopes=(), device=None, rate_limit=None, expires_at=None) -> str:
        """Create a key and return its token."""
        return create_test_key(self.settings, scopes, device, rate_limit, expires_at)

    def headers(self, token: str) -> dict[str, str]:
        """Return the Authorization header of ``token``."""
        return bearer(token)

    @staticmethod
    def key_id(token: str) -> str:
        """Return the id of the key a token belongs to."""
        return token.split("_")[1]


@pytest.fixture
def auth(settings) -> AuthActions:
    """Create keys (``auth.create_key(scopes=[...], device=None, rate_limit=None)``) and headers."""
    return AuthActions(settings)


def keyed_client(app, token: str, cache_from=None):
    """Return a test client of ``app`` that sends ``token`` by default.

    ``cache_from`` (settings of a reachable database) puts the key in the app's key cache first,
    for an app whose own Postgres is unreachable on purpose.
    """
    if cache_from is not None:
        from web.auth import hash_token, load_principal

        with psycopg.connect(cache_from.database_url, autocommit=True) as conn:
            app.extensions["key_cache"].put(hash_token(token), load_principal(conn, token))
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return test_client


@pytest.fixture
def client(app, admin_token):
    """A Flask test client on the real services, sending the admin key unless a test gives its own header."""
    return keyed_client(app, admin_token)


@pytest.fixture
def anon_client(app):
    """A Flask test client on the real services that sends no key."""
    return app.test_client()


@pytest.fixture
def fake_app(settings):
    """The application on fakeredis (for fast validation and latest-state tests).

    Postgres is the session's test database: a latest read that misses Redis falls back to Postgres
    *_latest, and must never reach the developer's database (nor fail where none exists).
    """
    from web import create_app
    from web.latest_state import LatestStateStore

    application = create_app(settings)
    fake = fakeredis.FakeRedis(decode_responses=True)
    application.extensions["redis"] = fake
    application.extensions["latest_state"] = LatestStateStore(fake)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def fake_client(fake_app, admin_token):
    """A Flask test client on fakeredis, sending the admin key unless a test gives its own header."""
    return keyed_client(fake_app, admin_token)


class RedisRoundTrips:
    """Count what this thread's Redis clients send to the server (one pipeline or script call = one send).

    Only the calling thread's sends count: what a request costs, not what the key cache's watcher
    thread polls meanwhile.
    """

    def __init__(self, monkeypatch):
        self.count = 0
        original = redis.connection.AbstractConnection.send_packed_command
        thread = threading.get_ident()

        def counting(conn, command, check_health=True):
            if threading.get_ident() == thread:
                self.count += 1
            return original(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)


def iso(ts: datetime) -> str:
    """Format a timestamp as the API expects."""
    return ts.astimezone(UTC).isoformat()


def stored_answer(redis_client, key: str) -> dict | None:
    """Return the API answer a latest hash holds (its ``json`` field), decoded; None without one."""
    raw = redis_client.hget(key, "json")
    return None if raw is None else json.loads(raw)


def minutes_ago(n: float) -> datetime:
    """Return a timestamp ``n`` minutes before now, whole seconds."""
    return (datetime.now(UTC) - timedelta(minutes=n)).replace(microsecond=0)


def meter(meter_id="meter-1", kwh=10.0, voltage=230.0, ts=None, **extra) -> dict:
    """Return a valid meter reading body."""
    return {"meterId": meter_id, "kwhConsumedAc": kwh, "voltage": voltage,
            "timestamp": iso(ts or minutes_ago(1)), **extra}


def vehicle(vehicle_id="vehicle-1", soc=50.0, kwh=8.0, temp=30.0, ts=None, **extra) -> dict:
    """Return a valid vehicle reading body."""
    return {"vehicleId": vehicle_id, "soc": soc, "kwhDeliveredDc": kwh, "batteryTemp": temp,
            "timestamp": iso(ts or minutes_ago(1)), **extra}

"""Reads on a streaming replica: a private primary and its pg_basebackup replica, made here and stopped at the end.

The proof that reads come from the replica: with its replay paused, an answer misses a reading the
primary holds; once the pause lasts longer than REPLICA_MAX_LAG_SECONDS the same request answers
from the primary. Stopping the replica sends reads to the primary without a 5xx.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from common.database import release
from tests.conftest import create_test_key, keyed_client
from tests.reliability.servers import PrivatePostgres, wait_until
from web import create_app
from web import db as web_db
from web.replica import lsn_to_int, replay_lag

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


# -- the lag rule, without servers ---------------------------------------------------------------


def test_lsn_text_compares_as_a_number():
    assert lsn_to_int("0/16B3748") == 0x16B3748
    assert lsn_to_int("16/B374D848") > lsn_to_int("9/FFFFFFFF")
    assert lsn_to_int(None) is None


def test_a_replica_that_replayed_everything_has_no_lag_however_old_its_last_transaction():
    assert replay_lag(primary_lsn=100, replay_lsn=100, receive_lsn=100, seconds_since_replay=3600) == 0.0
    # Without the primary's position, what it received stands in for it.
    assert replay_lag(primary_lsn=None, replay_lsn=100, receive_lsn=100, seconds_since_replay=3600) == 0.0


def test_a_replica_behind_is_as_stale_as_its_last_replayed_transaction():
    assert replay_lag(primary_lsn=200, replay_lsn=100, receive_lsn=200, seconds_since_replay=7.5) == 7.5
    assert replay_lag(primary_lsn=None, replay_lsn=100, receive_lsn=200, seconds_since_replay=7.5) == 7.5
    assert replay_lag(primary_lsn=200, replay_lsn=100, receive_lsn=100, seconds_since_replay=None) == math.inf
    assert replay_lag(primary_lsn=200, replay_lsn=None, receive_lsn=None, seconds_since_replay=None) == math.inf


# -- run_read's retry rule, with a stand-in replica -----------------------------------------------


class FailingReplica:
    """A replica pool whose every query raises ``error``; records whether the replica was marked down."""

    def __init__(self, error: Exception):
        self.error = error
        self.marked_down: list[str] = []

    @contextlib.contextmanager
    def connection(self):
        yield self

    def execute(self, *args):
        raise self.error

    def mark_down(self, error: str) -> None:
        self.marked_down.append(error)


@pytest.fixture
def failing_replica(app, monkeypatch):
    def install(error: Exception) -> FailingReplica:
        replica = FailingReplica(error)
        monkeypatch.setattr(web_db, "read_pool", lambda app=None: replica)
        monkeypatch.setattr(web_db, "replica_monitor", lambda app=None: replica)
        return replica
    return install


def primary_or_replica(conn) -> str:
    return conn.execute("SELECT 'primary'").fetchone()[0]


def test_a_recovery_conflict_is_answered_by_the_primary_and_leaves_the_replica_in_use(app, failing_replica):
    replica = failing_replica(psycopg.errors.SerializationFailure("canceling statement due to conflict with recovery"))
    with app.app_context():
        assert web_db.run_read(primary_or_replica) == "primary"
    assert replica.marked_down == []


def test_a_lost_replica_connection_is_answered_by_the_primary_and_marks_the_replica_down(app, failing_replica):
    replica = failing_replica(psycopg.OperationalError("server closed the connection unexpectedly"))
    with app.app_context():
        assert web_db.run_read(primary_or_replica) == "primary"
    assert len(replica.marked_down) == 1 and "server closed the connection" in replica.marked_down[0]


def test_a_statement_timeout_on_the_replica_is_not_run_again_on_the_primary(app, failing_replica, client):
    failing_replica(psycopg.errors.QueryCanceled("canceling statement due to statement timeout"))
    with app.app_context(), pytest.raises(psycopg.errors.QueryCanceled):
        web_db.run_read(primary_or_replica)
    r = client.get("/v1/conflicts")  # the same through the API: a JSON 503, no stack trace
    assert r.status_code == 503 and r.get_json()["error"] == "database_unavailable"


# -- a real primary and replica ------------------------------------------------------------------


class Cluster:
    """A private primary (initdb) and a streaming replica of it (pg_basebackup -R), on free loopback ports."""

    def __init__(self, root: Path):
        self.primary = PrivatePostgres(root / "primary")
        self.replica = PrivatePostgres(root / "replica")

    def start(self) -> None:
        self.primary.init()
        self.primary.start()
        replica = self.replica
        replica.root.mkdir(parents=True)
        replica.socket_dir.mkdir()
        if replica._as_root:
            shutil.chown(replica.root, "postgres", "postgres")
            shutil.chown(replica.socket_dir, "postgres", "postgres")
        # initdb's pg_hba.conf trusts replication connections from loopback; -R writes primary_conninfo.
        replica._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                     "-D", str(replica.data_dir), "-R", "-X", "stream", "--no-sync", "-c", "fast")
        with open(replica.data_dir / "postgresql.conf", "a") as conf:  # the copy says the primary's port
            conf.write(f"\n# the replica\nport = {replica.port}\nunix_socket_directories = '{replica.socket_dir}'\n")
        replica.start()

    def stop(self) -> None:
        self.replica.stop("immediate")
        self.primary.stop("immediate")


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="energy-replica-"))
    root.chmod(0o755)  # the servers run as the postgres user when the suite runs as root
    made = Cluster(root)
    try:
        made.start()
        yield made
    finally:
        web_db.close_pools()  # the replica monitors' threads and both servers' pools of these tests
        made.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def replica_settings(cluster, settings):
    """The session's settings (its Redis db) on the private primary, with the replica for reads."""
    s = dataclasses.replace(
        settings, database_url=cluster.primary.url("energy"), database_replica_url=cluster.replica.url("energy"),
        replica_max_lag_seconds=1.0, replica_check_seconds=0.1, replica_retry_seconds=0.5,
    )
    release(s)  # after the base backup: the replica replays the migrations (it has replayed a transaction)
    wait_until(lambda: _replica_has_table(cluster, "vehicle_readings"), 30, "the replica to replay the migrations")
    return s


def _replica_has_table(cluster, table: str) -> bool:
    try:
        with psycopg.connect(cluster.replica.url("energy"), connect_timeout=2) as conn:
            return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
    except psycopg.OperationalError:
        return False


@pytest.fixture
def primary(replica_settings):
    """An autocommit connection to the primary; the tables are emptied after the test."""
    with psycopg.connect(replica_settings.database_url, autocommit=True) as conn:
        yield conn
        for table in ("meter_readings", "vehicle_readings", "vehicle_latest", "vehicle_meter_map",
                      "reading_conflicts"):
            conn.execute(f"DELETE FROM {table}")


@pytest.fixture
def replica_conn(cluster):
    with psycopg.connect(cluster.replica.url("energy"), autocommit=True) as conn:
        yield conn
        conn.execute("SELECT pg_wal_replay_resume()")


def make_client(settings, redis_client, **overrides):
    """A test client of an app on ``settings`` (with ``overrides``), sending an admin key."""
    s = dataclasses.replace(settings, **overrides)
    app = create_app(s)
    app.config["TESTING"] = True
    return app, keyed_client(app, create_test_key(s, scopes=["admin"], name="tests: replica"))


def add_vehicle_readings(conn, vehicle_id: str, minutes_ago: list[int]) -> None:
    for n in minutes_ago:
        conn.execute("INSERT INTO vehicle_readings VALUES (%s, %s, 50, %s, 25)",
                     (vehicle_id, NOW - timedelta(minutes=n), 100 - n))


def replica_caught_up(cluster, primary) -> bool:
    target = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    with psycopg.connect(cluster.replica.url("energy")) as conn:
        replayed = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
    return lsn_to_int(replayed) >= lsn_to_int(target)


def readings(client, vehicle_id: str) -> int:
    r = client.get(f"/v1/vehicles/{vehicle_id}/readings")
    assert r.status_code == 200, r.get_json()
    return len(r.get_json()["readings"])


def metric(client, line_start: str) -> float | None:
    text = client.get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def test_reads_come_from_the_replica_and_from_the_primary_once_it_lags(cluster, replica_settings, primary,
                                                                       replica_conn, redis_client):
    lenient_app, lenient = make_client(replica_settings, redis_client, replica_max_lag_seconds=3600.0)
    strict_app, strict = make_client(replica_settings, redis_client)
    add_vehicle_readings(primary, "v1", [30, 20])
    wait_until(lambda: replica_caught_up(cluster, primary), 30, "the replica to replay the readings")
    for app in (lenient_app, strict_app):
        with app.app_context():
            wait_until(web_db.replica_monitor().usable, 30, "the replica monitor to find the replica current")
    assert readings(strict, "v1") == 2
    # The web process's reads are connections on the replica.
    names = replica_conn.execute("SELECT application_name FROM pg_stat_activity").fetchall()
    assert ("energy-web-replica",) in names

    replica_conn.execute("SELECT pg_wal_replay_pause()")
    add_vehicle_readings(primary, "v1", [10])
    # A mapping written now is read back at once (mappings read the primary), replay paused or not.
    created = lenient.post("/v1/mappings", json={"vehicleId": "v1", "meterId": "m1"})
    assert created.status_code == 201
    assert lenient.get("/v1/mappings/v1").status_code == 200
    assert lenient.get("/v1/analytics/performance/v1?hours=1").status_code == 200  # its mapping from the primary

    # Within its lag allowance the replica answers: without the reading it has not replayed.
    assert readings(lenient, "v1") == 2
    # Past REPLICA_MAX_LAG_SECONDS (1 s) the same request answers from the primary.
    with strict_app.app_context():
        wait_until(lambda: not web_db.replica_monitor().usable(), 30, "the replica monitor to see the lag")
    assert readings(strict, "v1") == 3
    assert metric(strict, "energy_replica_lag_seconds") > 1.0
    assert metric(strict, "energy_replica_reads") == 0
    assert metric(lenient, "energy_replica_reads") == 1
    ready = strict.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["replica"]["reads"] == "primary"

    replica_conn.execute("SELECT pg_wal_replay_resume()")
    with strict_app.app_context():
        wait_until(web_db.replica_monitor().usable, 30, "the replica monitor to see the replica catch up")
    assert readings(strict, "v1") == readings(lenient, "v1") == 3
    assert metric(strict, "energy_replica_lag_seconds") <= 1.0


def test_reads_fall_back_to_the_primary_while_the_replica_is_stopped(cluster, replica_settings, primary,
                                                                     redis_client):
    app, client = make_client(replica_settings, redis_client)
    # A process whose monitor has not noticed the stop yet (it checks once an hour): its requests find out.
    unaware_app, unaware = make_client(replica_settings, redis_client, replica_check_seconds=3600.0)
    add_vehicle_readings(primary, "v2", [30, 20, 10])
    primary.execute("INSERT INTO vehicle_latest (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp) "
                    "VALUES ('v2', %s, 50, 90, 25)", (NOW - timedelta(minutes=10),))
    primary.execute("INSERT INTO vehicle_meter_map (vehicle_id, meter_id) VALUES ('v2', 'm2')")
    wait_until(lambda: replica_caught_up(cluster, primary), 30, "the replica to replay the readings")
    with app.app_context():
        monitor = web_db.replica_monitor()
    with unaware_app.app_context():
        unaware_monitor = web_db.replica_monitor()
    wait_until(lambda: monitor.usable() and unaware_monitor.usable(), 30, "the replica monitors to find it current")
    assert readings(unaware, "v2") == 3  # through a pooled replica connection, which the stop breaks

    cluster.replica.stop("fast")
    try:
        # The first request meets the broken replica connection: answered by the primary, the replica marked down.
        paths = ["/v1/vehicles/v2/readings", "/v1/vehicles/v2/readings?interval=1h",
                 "/v1/analytics/performance/v2?hours=1", "/v1/conflicts", "/v1/vehicles/v2/latest", "/v1/vehicles",
                 "/v1/vehicles/v2/readings?format=csv"]
        for path in paths:
            r = unaware.get(path)
            body = r.get_data(as_text=True)
            # Closed here: a CSV response streams within its request context until closed. Left to the
            # garbage collector (a failed test's traceback holds it), it is the likely cause of a later
            # test's request failing "outside of request context" in the same run.
            r.close()
            assert r.status_code == 200, (path, body)
        assert readings(unaware, "v2") == 3
        assert not unaware_monitor.usable()
        wait_until(lambda: not monitor.usable(), 30, "the replica monitor to see the replica stopped")
        ready = client.get("/readyz")
        assert ready.status_code == 200  # the replica alone down leaves the process ready
        body = ready.get_json()
        assert body["status"] == "ready" and body["checks"]["replica"]["ok"] is False
        assert body["checks"]["replica"]["reads"] == "primary" and body["checks"]["replica"]["error"]
        assert metric(client, 'energy_up{server="replica"}') == 0
        assert metric(client, "energy_replica_reads") == 0
    finally:
        cluster.replica.start()
    wait_until(monitor.usable, 30, "the replica monitor to find the restarted replica")
    # The monitor that a request woke checks again after REPLICA_RETRY_SECONDS, not after its hour.
    wait_until(unaware_monitor.usable, 30, "the woken replica monitor to find the restarted replica")
    assert readings(client, "v2") == 3
    assert metric(client, 'energy_up{server="replica"}') == 1

"""Ingest -> Redis -> drain -> Postgres on the real services, with the drain run in-process."""

import dataclasses
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis

from common.streams import CONSUMER_GROUP, DEAD_LETTER_STREAM_KEY, DRAIN_BEHIND_KEY, FAILURES_KEY, STREAM_KEY
from tests.conftest import meter, minutes_ago, vehicle
from workers import drain
from workers.drain import StreamDrainer


@pytest.fixture
def drainer(settings, redis_client):
    d = StreamDrainer(settings, redis_client, "test-consumer")
    d.ensure_group()
    yield d
    d.close()


def drain_all(drainer, limit=100):
    """Drain until a read comes back empty; return the rows written."""
    before = drainer.totals.rows_written
    for _ in range(limit):
        n = drainer.drain_once(block_ms=10)
        if n == 0 and not drainer.client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"]:
            return drainer.totals.rows_written - before
    raise AssertionError("the stream did not drain")


def pending_count(redis_client):
    return redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"]


def test_readings_land_in_the_partition_of_their_utc_day(client, db, drainer):
    yesterday = (datetime.now(UTC) - timedelta(days=1)).replace(hour=23, minute=59, second=30, microsecond=0)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    r = client.post("/v1/telemetry", json=[meter("m1", kwh=1, ts=yesterday), meter("m1", kwh=2, ts=today),
                                           vehicle("v1", ts=today)])
    assert r.status_code == 202
    assert drain_all(drainer) == 3
    rows = db.execute("SELECT tableoid::regclass::text, ts FROM meter_readings ORDER BY ts").fetchall()
    assert rows == [(f"meter_readings_{yesterday:%Y%m%d}", yesterday), (f"meter_readings_{today:%Y%m%d}", today)]
    vrow = db.execute("SELECT tableoid::regclass::text FROM vehicle_readings").fetchone()
    assert vrow == (f"vehicle_readings_{today:%Y%m%d}",)


def test_values_survive_the_trip_exactly(client, db, drainer):
    ts = minutes_ago(3)
    client.post("/v1/telemetry", json=[meter("m1", kwh=1234.5678901234, voltage=229.99, ts=ts),
                                       vehicle("v1", soc=99.125, kwh=0.1, temp=-12.5, ts=ts)])
    drain_all(drainer)
    assert db.execute("SELECT * FROM meter_readings").fetchall() == [("m1", ts, 1234.5678901234, 229.99)]
    assert db.execute("SELECT * FROM vehicle_readings").fetchall() == [("v1", ts, 99.125, 0.1, -12.5)]


def test_the_same_batch_twice_leaves_one_row_per_device_and_timestamp(client, db, drainer):
    batch = [meter(f"m{i}", ts=minutes_ago(i)) for i in range(5)] + [vehicle("v1", ts=minutes_ago(i)) for i in range(5)]
    assert client.post("/v1/telemetry", json=batch).status_code == 202
    assert client.post("/v1/telemetry", json=batch).status_code == 202
    drain_all(drainer)
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 5
    assert db.execute("SELECT count(*) FROM vehicle_readings").fetchone()[0] == 5
    assert drainer.totals.rows_written == 10
    assert drainer.totals.duplicates_skipped == 10
    assert pending_count(drainer.client) == 0


def test_out_of_order_reading_does_not_move_latest_back(client, db, drainer):
    client.post("/v1/telemetry", json=vehicle("v1", soc=60, ts=minutes_ago(1)))
    drain_all(drainer)
    client.post("/v1/telemetry", json=vehicle("v1", soc=50, ts=minutes_ago(2)))
    drain_all(drainer)
    assert db.execute("SELECT count(*) FROM vehicle_readings").fetchone()[0] == 2
    assert db.execute("SELECT soc FROM vehicle_latest WHERE vehicle_id = 'v1'").fetchone() == (60.0,)
    assert client.get("/v1/vehicles/v1/latest").get_json()["soc"] == 60.0


def test_latest_in_postgres_is_the_newest_even_inside_one_batch(client, db, drainer):
    client.post("/v1/telemetry", json=[meter("m1", kwh=k, ts=minutes_ago(m)) for k, m in [(1, 3), (3, 1), (2, 2)]])
    drain_all(drainer)
    assert db.execute("SELECT kwh_consumed_ac FROM meter_latest").fetchall() == [(3.0,)]


def test_a_batch_with_one_bad_item_writes_nothing(client, db, redis_client):
    r = client.post("/v1/telemetry", json=[meter("m1"), {**vehicle("v1"), "batteryTemp": 999}])
    assert r.status_code == 400
    assert redis_client.exists(STREAM_KEY) == 0
    assert redis_client.keys("latest:*") == []


def test_killed_consumer_entries_are_reclaimed_and_written_once(settings, client, db, redis_client):
    for i in range(20):  # one request, one stream entry each
        client.post("/v1/telemetry", json=meter(f"m{i}", ts=minutes_ago(1)))
    victim = StreamDrainer(settings, redis_client, "victim")
    victim.ensure_group()
    # The victim reads the entries (they become pending to it) and dies before writing or acknowledging.
    read = victim.read_new()
    assert len(read) == 20
    assert pending_count(redis_client) == 20

    survivor = StreamDrainer(settings, redis_client, "survivor")
    deadline = datetime.now(UTC) + timedelta(seconds=15)
    while pending_count(redis_client) and datetime.now(UTC) < deadline:
        survivor.drain_once(block_ms=100)  # reclaims once the entries are idle for RECLAIM_IDLE_SECONDS
    survivor.close()
    assert pending_count(redis_client) == 0
    assert survivor.totals.reclaimed == 20
    assert db.execute("SELECT count(*), count(DISTINCT meter_id) FROM meter_readings").fetchone() == (20, 20)


def test_redelivery_after_commit_but_before_ack_writes_nothing_twice(settings, client, db, redis_client, drainer):
    client.post("/v1/telemetry", json=[vehicle(f"v{i}") for i in range(10)])
    entries, _ = drainer.fetch(10)
    drainer.write(entries)  # committed, but the process "dies" before XACK
    other = StreamDrainer(settings, redis_client, "other")
    deadline = datetime.now(UTC) + timedelta(seconds=15)
    while pending_count(redis_client) and datetime.now(UTC) < deadline:
        other.drain_once(block_ms=100)
    other.close()
    assert pending_count(redis_client) == 0
    assert other.totals.duplicates_skipped == 10
    assert db.execute("SELECT count(*) FROM vehicle_readings").fetchone()[0] == 10


def test_poison_entry_is_dead_lettered_while_the_rest_drain(settings, client, db, redis_client, drainer):
    client.post("/v1/telemetry", json=[meter("good-1"), meter("good-2")])
    # A record no partition can take (year 2000): the drain must not let it block the others.
    redis_client.xadd(STREAM_KEY, {"k": "m", "r": "poison\t2000-01-01T00:00:00+00:00\t1.0\t230.0"})
    client.post("/v1/telemetry", json=meter("good-3"))
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while (pending_count(redis_client) or redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 0) and (
        datetime.now(UTC) < deadline
    ):
        drainer.drain_once(block_ms=100)
    assert db.execute("SELECT meter_id FROM meter_readings ORDER BY 1").fetchall() == [
        ("good-1",), ("good-2",), ("good-3",)
    ]
    dead = redis_client.xrange(DEAD_LETTER_STREAM_KEY)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["r"].startswith("poison\t")
    assert int(fields["failures"]) == settings.dead_letter_after
    assert "partition" in fields["error"]
    assert pending_count(redis_client) == 0
    assert not redis_client.exists(FAILURES_KEY)


def test_postgres_unavailable_keeps_entries_pending_then_writes_them(settings, client, db, redis_client):
    client.post("/v1/telemetry", json=[meter(f"m{i}") for i in range(5)])
    calls = {"n": 0}

    def flaky_connect():
        calls["n"] += 1
        if calls["n"] <= 2:  # the first two connection attempts find Postgres down
            return psycopg.connect("postgresql://127.0.0.1:1/none", connect_timeout=1)
        return psycopg.connect(settings.database_url)

    d = StreamDrainer(settings, redis_client, "flaky", connect_db=flaky_connect)
    d.ensure_group()
    totals = None
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while datetime.now(UTC) < deadline:
        totals = d.run(seconds=1)
        if db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 5:
            break
    d.close()
    assert totals.retries >= 2
    assert totals.dead_lettered == 0
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 5
    assert pending_count(redis_client) == 0


def test_redis_restart_losing_the_group_is_survived(settings, client, db, redis_client, drainer):
    client.post("/v1/telemetry", json=meter("m1"))
    drain_all(drainer)
    redis_client.delete(STREAM_KEY)  # as if Redis came back empty
    client.post("/v1/telemetry", json=meter("m2"))
    drainer.run(seconds=1)
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 2


def test_a_drain_behind_goes_straight_on_from_one_full_read_to_the_next(settings, client, db, redis_client,
                                                                       monkeypatch):
    # An entry holds a whole request: reads of three 10-reading entries fill DRAIN_BATCH_SIZE (30) in
    # rows with an entry count far below it. With a linger longer than the run, a drain that took
    # "fewer entries than DRAIN_BATCH_SIZE" for caught up would stop after its first batch.
    import threading

    monkeypatch.setattr(drain, "_BEHIND_SIGNAL_MS", 600_000)  # still there when the test looks
    behind = dataclasses.replace(settings, drain_batch_size=30, drain_linger_ms=600_000)
    for request in range(13):  # the reads take 1, 3, 3, 3, 3 entries: each one full
        batch = [meter(f"m{request}-{i}", ts=minutes_ago(2)) for i in range(10)]
        assert client.post("/v1/telemetry", json=batch).status_code == 202
    d = StreamDrainer(behind, redis_client, "behind")
    stop = threading.Event()
    try:
        totals = d.run(seconds=120, stop=stop, heartbeat=lambda: d.totals.rows_written >= 130 and stop.set())
    finally:
        d.close()
    assert totals.rows_written == 130
    assert pending_count(redis_client) == 0
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 130
    assert redis_client.get(DRAIN_BEHIND_KEY) == "behind"  # the rollups fold waits meanwhile


def test_a_drain_that_keeps_up_does_not_say_it_is_behind(settings, client, db, redis_client, monkeypatch):
    import threading

    monkeypatch.setattr(drain, "_BEHIND_SIGNAL_MS", 600_000)
    assert client.post("/v1/telemetry", json=[meter(f"m{i}", ts=minutes_ago(2)) for i in range(10)]).status_code == 202
    d = StreamDrainer(dataclasses.replace(settings, drain_batch_size=30, drain_linger_ms=10), redis_client, "keeps-up")
    stop = threading.Event()
    reads = []
    try:
        # A job's first read takes one entry (full, but sized from nothing); the next ones find the stream empty.
        d.run(seconds=120, stop=stop, heartbeat=lambda: (reads.append(1), len(reads) > 3 and stop.set()))
    finally:
        d.close()
    assert d.totals.rows_written == 10
    assert not redis_client.exists(DRAIN_BEHIND_KEY)


def test_drain_run_stops_when_asked(settings, redis_client):
    import threading

    stop = threading.Event()
    stop.set()
    d = StreamDrainer(settings, redis_client, "stopper")
    assert d.run(seconds=60, stop=stop).batches == 0


def test_data_client_for_the_drain_outlives_its_blocking_read(settings):
    from common.redis_clients import data_client

    client = data_client(settings, socket_timeout=settings.drain_block_ms / 1000 + 1)
    try:
        client.xgroup_create("blocking-test", "g", id="0", mkstream=True)
        assert client.xreadgroup("g", "c", {"blocking-test": ">"}, count=1, block=settings.drain_block_ms) in ([], {})
    except redis.TimeoutError:  # pragma: no cover - this is what the test guards against
        pytest.fail("a blocking read outlived the socket timeout")
    finally:
        client.delete("blocking-test")


def test_a_drain_batch_holds_about_drain_batch_size_readings_whatever_the_entries_hold(settings, client, redis_client):
    import dataclasses

    for b in range(6):  # six requests: six entries of 500 readings
        assert client.post("/v1/telemetry", json=[meter(f"b{b}-{i}") for i in range(500)]).status_code == 202
    d = StreamDrainer(dataclasses.replace(settings, drain_batch_size=1000), redis_client, "sizer")
    d.ensure_group()
    try:
        # The first read takes one entry (its size is not known yet), then as many as make 1,000 readings.
        assert [d.drain_once(block_ms=10) for _ in range(4)] == [1, 2, 2, 1]
    finally:
        d.close()
    assert d.totals.rows_written == 3000

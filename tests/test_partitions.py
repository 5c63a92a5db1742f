"""Partition maintenance against a fake "today", in a private database (it creates and drops days freely)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from datetime import date, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from common.database import PARTITIONED_TABLES, release
from scheduler.partitions import drop_expired_partitions, expired_partitions, maintain_partitions

TODAY = date(2031, 3, 15)  # far from the real today, so that the window is the fake one only


@pytest.fixture
def private_settings(servers, settings):
    """Settings on a database of this test's own, migrated; retention 10 days, premake 3."""
    server_url, _redis_url = servers
    dbname = f"energy_parts_{uuid.uuid4().hex[:10]}"
    s = dataclasses.replace(settings, database_url=make_conninfo(server_url, dbname=dbname),
                            retention_days=10, partition_premake_days=3)
    release(s)
    yield s
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def days(conn, table) -> list[date]:
    return [row[0] for row in conn.execute("SELECT day FROM daily_partitions(%s::regclass)", (table,))]


def span(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def test_partitions_are_created_ahead_and_dropped_behind_as_days_pass(private_settings):
    with psycopg.connect(private_settings.database_url, autocommit=True) as conn:
        made_by_release = {f"{t}_{d:%Y%m%d}" for t in PARTITIONED_TABLES for d in days(conn, t)}
    first_run = maintain_partitions(private_settings, today=TODAY)
    # The release step made the real today's window: years before the fake today, so all of it goes.
    assert set(first_run["dropped"]) == made_by_release
    assert first_run["created"] == len(PARTITIONED_TABLES) * 14
    with psycopg.connect(private_settings.database_url, autocommit=True) as conn:
        for table in PARTITIONED_TABLES:
            assert days(conn, table) == span(TODAY - timedelta(days=10), TODAY + timedelta(days=3))
        conn.execute("INSERT INTO meter_readings VALUES ('m1', %s, 1, 230), ('m1', %s, 2, 230)",
                     (f"{TODAY - timedelta(days=10)}T12:00:00Z", f"{TODAY}T12:00:00Z"))

    later = TODAY + timedelta(days=5)
    result = maintain_partitions(private_settings, today=later)

    assert result["created"] == len(PARTITIONED_TABLES) * 5
    assert sorted(result["dropped"]) == sorted(
        f"{t}_{d:%Y%m%d}" for t in PARTITIONED_TABLES
        for d in span(TODAY - timedelta(days=10), later - timedelta(days=11)))
    with psycopg.connect(private_settings.database_url, autocommit=True) as conn:
        for table in PARTITIONED_TABLES:
            assert days(conn, table) == span(later - timedelta(days=10), later + timedelta(days=3))
        # The day that fell out of the window went whole; the kept day kept its row. No DELETE ran.
        assert conn.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 1
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname ~ '^(meter|vehicle)_readings_[0-9]{8}$' "
            "AND NOT relispartition").fetchone()[0]
        assert leftovers == 0


def test_running_twice_changes_nothing_the_second_time(private_settings, caplog):
    caplog.set_level(logging.INFO)  # the log lines' fields must not clash with LogRecord's own
    maintain_partitions(private_settings, today=TODAY)
    again = maintain_partitions(private_settings, today=TODAY)
    assert again["created"] == 0
    assert again["dropped"] == []


def test_two_runs_at_once_end_in_the_same_state_without_errors(private_settings):
    maintain_partitions(private_settings, today=TODAY)
    later = TODAY + timedelta(days=4)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait()
            results.append(maintain_partitions(private_settings, today=later))
        except Exception as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(r["created"] for r in results) == len(PARTITIONED_TABLES) * 4
    dropped = [p for r in results for p in r["dropped"]]
    assert len(dropped) == len(set(dropped)) == len(PARTITIONED_TABLES) * 4  # every expired day dropped exactly once
    with psycopg.connect(private_settings.database_url, autocommit=True) as conn:
        for table in PARTITIONED_TABLES:
            assert days(conn, table)[0] == later - timedelta(days=10)
            assert days(conn, table)[-1] >= later + timedelta(days=3)


def test_an_interrupted_detach_and_a_detached_table_are_finished_by_the_next_run(private_settings):
    maintain_partitions(private_settings, today=TODAY)
    old = TODAY - timedelta(days=10)
    with psycopg.connect(private_settings.database_url, autocommit=True) as conn:
        # A run that detached a partition and died before dropping it.
        conn.execute(f"ALTER TABLE vehicle_readings DETACH PARTITION vehicle_readings_{old:%Y%m%d}")
        states = {row[0]: row[2] for table in PARTITIONED_TABLES
                  for row in expired_partitions(conn, table, TODAY - timedelta(days=9))}
        assert states == {f"meter_readings_{old:%Y%m%d}": "attached", f"vehicle_readings_{old:%Y%m%d}": "detached",
                          f"meter_hourly_rollups_{old:%Y%m%d}": "attached",
                          f"vehicle_hourly_rollups_{old:%Y%m%d}": "attached"}

    dropped = drop_expired_partitions(private_settings, today=TODAY + timedelta(days=1))

    assert sorted(dropped) == sorted(f"{t}_{old:%Y%m%d}" for t in PARTITIONED_TABLES)
    with psycopg.connect(private_settings.database_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (f"vehicle_readings_{old:%Y%m%d}",)).fetchone()[0] is None


def test_writes_keep_flowing_while_a_day_is_dropped(private_settings):
    """DETACH ... CONCURRENTLY waits for an open writer but never blocks it (a plain DETACH or DROP would)."""
    maintain_partitions(private_settings, today=TODAY)
    with psycopg.connect(private_settings.database_url) as writer, \
            psycopg.connect(private_settings.database_url, autocommit=True) as observer:
        writer.execute("INSERT INTO meter_readings VALUES ('m1', %s, 1, 230)", (f"{TODAY}T01:00:00Z",))
        dropped = []
        runner = threading.Thread(
            target=lambda: dropped.extend(drop_expired_partitions(private_settings, TODAY + timedelta(days=1))))
        runner.start()
        # The retention is now waiting for the writer's open transaction...
        deadline = time.monotonic() + 30
        while not observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'energy-retention' "
                "AND wait_event_type = 'Lock'").fetchone()[0]:
            assert time.monotonic() < deadline, "the retention never waited for the writer"
            time.sleep(0.02)
        # ...and the writer still writes: nothing it needs is locked.
        writer.execute("SET LOCAL lock_timeout = '5s'")
        writer.execute("INSERT INTO meter_readings VALUES ('m1', %s, 2, 230)", (f"{TODAY}T02:00:00Z",))
        writer.commit()
        runner.join(60)
    assert not runner.is_alive()
    assert len(dropped) == len(PARTITIONED_TABLES)
    with psycopg.connect(private_settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 2


def test_partition_bounds_are_utc_days_whatever_the_session_time_zone(private_settings):
    with psycopg.connect(private_settings.database_url, autocommit=True,
                         options="-c TimeZone=Pacific/Kiritimati") as conn:
        conn.execute("SET TimeZone = 'Pacific/Kiritimati'")
        maintain_partitions(private_settings, today=TODAY)
        bound = conn.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s",
            (f"meter_readings_{TODAY:%Y%m%d}",)).fetchone()[0]
    assert "2031-03-15 14:00:00+14" in bound and "2031-03-16 14:00:00+14" in bound


def test_citus_flavor_drops_expired_days_with_a_plain_detach(private_settings, monkeypatch):
    """POSTGRES_FLAVOR=citus: Citus refuses DETACH ... CONCURRENTLY, so retention detaches in one transaction."""
    from scheduler import partitions

    used = []
    real_ddl = partitions._ddl
    monkeypatch.setattr(partitions, "_ddl", lambda name, *args: used.append(name) or real_ddl(name, *args))
    citus = dataclasses.replace(private_settings, postgres_flavor="citus")
    maintain_partitions(citus, today=TODAY)
    later = TODAY + timedelta(days=2)
    result = maintain_partitions(citus, today=later)
    assert sorted(result["dropped"]) == sorted(f"{t}_{d:%Y%m%d}" for t in PARTITIONED_TABLES
                                               for d in span(TODAY - timedelta(days=10), later - timedelta(days=11)))
    assert "partitions/detach" in used and "partitions/detach_concurrently" not in used
    with psycopg.connect(private_settings.database_url, autocommit=True) as conn:
        assert days(conn, "meter_readings")[0] == later - timedelta(days=10)

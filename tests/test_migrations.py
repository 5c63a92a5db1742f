"""Migrations apply once and record themselves; partitions cover the retention window by UTC day."""

from datetime import UTC, date, datetime, timedelta

import psycopg

from common.database import PARTITIONED_TABLES, apply_migrations, ensure_partitions, migration_files, partition_window


def partitions(conn, table):
    return [row[0] for row in conn.execute("SELECT partition_name FROM daily_partitions(%s)", (table,))]


def test_every_migration_is_recorded_and_a_second_run_is_a_no_op(settings, db):
    recorded = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == [p.stem for p in migration_files()]
    with psycopg.connect(settings.database_url) as conn:
        assert apply_migrations(conn) == []


def test_partitions_exist_for_the_whole_window(settings, db):
    first, last = partition_window(settings)
    expected_days = (last - first).days + 1
    for table in ("meter_readings", "vehicle_readings"):
        names = partitions(db, table)
        assert names[0] == f"{table}_{first:%Y%m%d}"
        assert names[-1] == f"{table}_{last:%Y%m%d}"
        assert len(names) == expected_days


def test_ensure_partitions_is_idempotent_and_extends_with_the_date(settings, db):
    with psycopg.connect(settings.database_url) as conn:
        assert ensure_partitions(conn, settings) == 0
        future_today = datetime.now(UTC).date() + timedelta(days=3)
        assert ensure_partitions(conn, settings, today=future_today) == len(PARTITIONED_TABLES) * 3
    assert f"meter_readings_{future_today + timedelta(days=settings.partition_premake_days):%Y%m%d}" in partitions(
        db, "meter_readings"
    )


def test_partition_bounds_are_utc_days(db):
    db.execute("SELECT create_daily_partitions('meter_readings', %s, %s)", (date(2031, 3, 9), date(2031, 3, 9)))
    bound = db.execute(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE relname = 'meter_readings_20310309'"
    ).fetchone()[0]
    assert "2031-03-09 00:00:00+00" in bound and "2031-03-10 00:00:00+00" in bound
    db.execute("DROP TABLE meter_readings_20310309")

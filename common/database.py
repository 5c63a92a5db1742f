"""Postgres plumbing shared by every process: SQL files, migrations and partitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from common.settings import Settings

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
HISTORY_TABLES = ("meter_readings", "vehicle_readings")
ROLLUP_TABLES = ("meter_hourly_rollups", "vehicle_hourly_rollups")
# Every table partitioned by UTC day: partitions made ahead and dropped behind alike.
PARTITIONED_TABLES = HISTORY_TABLES + ROLLUP_TABLES
# Any constant works; it only has to be the same for every process that migrates.
_MIGRATION_LOCK = 727_274_001


@cache
def load_sql(name: str) -> str:
    """Return the text of ``sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text()


def connect(settings: Settings, **kwargs) -> psycopg.Connection:
    """Open a connection to the engine's database."""
    kwargs.setdefault("connect_timeout", 5)
    kwargs.setdefault("application_name", "energy-engine")
    return psycopg.connect(settings.database_url, **kwargs)


def create_database_if_missing(settings: Settings) -> bool:
    """Create the database named in DATABASE_URL when it does not exist; return True if created."""
    params = conninfo_to_dict(settings.database_url)
    dbname = params.get("dbname")
    if not dbname:
        return False
    try:
        psycopg.connect(settings.database_url, connect_timeout=5).close()
        return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    maintenance = make_conninfo(settings.database_url, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            return False
    return True


def migration_files() -> list[Path]:
    """Return the migration files in the order they apply."""
    return sorted(MIGRATIONS_DIR.glob("*.sql"))


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply every migration not yet recorded in ``schema_migrations``; return the ones applied."""
    applied_now: list[str] = []
    with conn.transaction():
        # One migrator at a time: the lock is held until this transaction ends.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for path in migration_files():
            if path.stem in done:
                continue
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
            applied_now.append(path.stem)
    return applied_now


def rollup_hour(ts: datetime) -> datetime:
    """Return the start of the hourly rollup bucket (h, h + 1 h] holding ``ts``, in UTC (rollup_hour() in SQL)."""
    return (ts.astimezone(UTC) - timedelta(microseconds=1)).replace(minute=0, second=0, microsecond=0)


def partition_window(settings: Settings, today: date | None = None) -> tuple[date, date]:
    """Return the first and last UTC day that must have a partition."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=settings.retention_days), today + timedelta(days=settings.partition_premake_days)


def ensure_partitions(conn: psycopg.Connection, settings: Settings, today: date | None = None) -> int:
    """Create the daily partitions of the history and rollup tables for the retention window; return how many."""
    first, last = partition_window(settings, today)
    created = 0
    with conn.transaction():
        for table in PARTITIONED_TABLES:
            row = conn.execute("SELECT create_daily_partitions(%s::regclass, %s, %s)", (table, first, last)).fetchone()
            created += row[0]
    return created


def release(settings: Settings) -> dict:
    """Run the release step: create the database if needed, migrate, create partitions."""
    created_db = create_database_if_missing(settings)
    with connect(settings) as conn:
        applied = apply_migrations(conn)
        partitions = ensure_partitions(conn, settings)
    return {"database_created": created_db, "migrations_applied": applied, "partitions_created": partitions}

"""Partition maintenance: daily partitions ahead of time, whole days dropped behind the retention window.

Old days go by ``DETACH PARTITION ... CONCURRENTLY`` and then ``DROP TABLE`` of the detached
table: readers and writers of the history tables are never blocked, and no row is ever DELETEd.
Every step is idempotent: a run that stops half way (a detach left pending, a detached table not
yet dropped) is finished by the next run, and two runs at once are serialised by an advisory lock
(the second one skips the drops). With ``POSTGRES_FLAVOR=citus`` the detach is a plain one (Citus
refuses CONCURRENTLY on distributed tables; docs/citus.md): a brief lock on the parent instead.
"""

from __future__ import annotations

import logging
from datetime import date

import psycopg
from psycopg import sql

from common.database import PARTITIONED_TABLES, connect, ensure_partitions, load_sql, partition_window
from common.settings import Settings

log = logging.getLogger(__name__)

# Session advisory lock held while dropping; any constant works as long as every scheduler uses it.
_RETENTION_LOCK = 727_274_005
# A DETACH waits for this long for a lock, then gives up until the next run rather than queueing
# (a queued lock request would block the queries that arrive after it).
_LOCK_TIMEOUT = "5s"


def expired_partitions(conn: psycopg.Connection, table: str, keep_from: date) -> list[tuple[str, date, str]]:
    """Return (partition, day, state) for every day of ``table`` before ``keep_from``."""
    return conn.execute(load_sql("partitions/expired"), {"parent": table, "keep_from": keep_from}).fetchall()


def _ddl(name: str, parent: str, partition: str) -> sql.Composed:
    return sql.SQL(load_sql(name).strip().rstrip(";")).format(
        parent=sql.Identifier(parent), partition=sql.Identifier(partition)
    )


def drop_expired_partitions(settings: Settings, today: date | None = None) -> list[str]:
    """Detach and drop every daily partition older than ``today - RETENTION_DAYS``; return those dropped."""
    keep_from, _last = partition_window(settings, today)
    dropped: list[str] = []
    detach = "partitions/detach" if settings.postgres_flavor == "citus" else "partitions/detach_concurrently"
    # DETACH ... CONCURRENTLY cannot run inside a transaction block: autocommit.
    with connect(settings, autocommit=True, application_name="energy-retention") as conn:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_RETENTION_LOCK,)).fetchone()[0]:
            log.info("retention skipped: another run holds the lock")
            return dropped
        try:
            conn.execute(f"SET lock_timeout = '{_LOCK_TIMEOUT}'")
            for table in PARTITIONED_TABLES:
                for partition, day, state in expired_partitions(conn, table, keep_from):
                    try:
                        if state == "attached":
                            conn.execute(_ddl(detach, table, partition))
                        elif state == "detach_pending":
                            conn.execute(_ddl("partitions/detach_finalize", table, partition))
                        conn.execute(_ddl("partitions/drop_detached", table, partition))
                    except psycopg.Error as exc:
                        # Left for the next run, which finishes a pending detach or a missing drop.
                        log.warning("partition not dropped", extra={"partition": partition, "day": day,
                                                                    "state": state, "error": str(exc).strip()})
                        continue
                    dropped.append(partition)
                    log.info("partition dropped", extra={"partition": partition, "day": day})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_RETENTION_LOCK,))
    return dropped


def maintain_partitions(settings: Settings, today: date | None = None) -> dict:
    """Create the partitions up to ``today + premake`` and drop those older than the retention window."""
    first, last = partition_window(settings, today)
    with connect(settings, application_name="energy-partitions") as conn:
        created = ensure_partitions(conn, settings, today)
    dropped = drop_expired_partitions(settings, today)
    result = {"created": created, "dropped": dropped, "keep_from": first.isoformat(), "ahead_to": last.isoformat()}
    log.info("partitions maintained", extra={"partitions_created": created, "partitions_dropped": dropped,
                                             "keep_from": result["keep_from"], "ahead_to": result["ahead_to"]})
    return result

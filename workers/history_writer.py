"""Write a batch of stream records to Postgres in one transaction: COPY, dedupe, move latest forward."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from common.database import load_sql
from common.streams import METER, VEHICLE

_STAGING = {METER: "meter_staging", VEHICLE: "vehicle_staging"}
_WRITE_SQL = {METER: "drain/meter_write", VEHICLE: "drain/vehicle_write"}
_CONFLICTS_SQL = {METER: "drain/meter_conflicts", VEHICLE: "drain/vehicle_conflicts"}


@dataclass
class WriteResult:
    """What one batch did to Postgres."""

    rows_received: int = 0
    rows_written: int = 0
    latest_moved: int = 0
    conflicts: int = 0

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.rows_received += other.rows_received
        self.rows_written += other.rows_written
        self.latest_moved += other.latest_moved
        self.conflicts += other.conflicts
        return self


class HistoryWriter:
    """Own one autocommit connection and write batches of COPY rows through its staging tables."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.conn.autocommit = True
        self.conn.execute(load_sql("drain/staging_tables"))

    def write(self, rows_by_kind: dict[str, list[str]]) -> WriteResult:
        """Write every row in one transaction; duplicates are skipped, those with other values recorded."""
        result = WriteResult()
        with self.conn.transaction(), self.conn.cursor() as cur:
            for kind in (METER, VEHICLE):
                rows = rows_by_kind.get(kind)
                if not rows:
                    continue
                with cur.copy(f"COPY {_STAGING[kind]} FROM STDIN") as copy:
                    copy.write(_copy_text(rows))
                written, moved = cur.execute(load_sql(_WRITE_SQL[kind])).fetchone()
                if written < len(rows):  # only a row history already held can conflict
                    result.conflicts += cur.execute(load_sql(_CONFLICTS_SQL[kind])).fetchone()[0]
                result.rows_received += len(rows)
                result.rows_written += written
                result.latest_moved += moved
        return result


def _copy_text(rows: Iterable[str]) -> str:
    return "\n".join(rows) + "\n"

"""The raw COPY floor: rows/s of COPY into a staging table and INSERT .. ON CONFLICT DO NOTHING.

This is what Postgres on this machine takes through the same staging path as the drain with no
Redis, no decoding and no latest-state upsert: a ceiling for the drain. It is measured with one
connection and with ``connections`` in parallel (one per drain worker), and the best is the floor.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg

from bench import fleet
from common.database import load_sql


def _batches(start: int, rows: int, batch: int, devices: int, base_ts: float) -> list[tuple[str, str]]:
    out = []
    for first in range(start, start + rows, batch):
        meters, vehicles = fleet.copy_rows(first, min(batch, start + rows - first), devices, base_ts)
        out.append(("\n".join(meters) + "\n" if meters else "", "\n".join(vehicles) + "\n" if vehicles else ""))
    return out


def _write(database_url: str, batches: list[tuple[str, str]], ready: threading.Barrier, errors: list) -> None:
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(load_sql("drain/staging_tables"))
            move = load_sql("bench/floor_move")
            ready.wait(120)
            _copy_batches(conn, batches, move)
    except (psycopg.Error, threading.BrokenBarrierError) as exc:
        errors.append(exc)
        ready.abort()


def _copy_batches(conn: psycopg.Connection, batches: list[tuple[str, str]], move: str) -> None:
    for meters, vehicles in batches:
        with conn.transaction(), conn.cursor() as cur:
            if meters:
                with cur.copy("COPY meter_staging FROM STDIN") as copy:
                    copy.write(meters)
            if vehicles:
                with cur.copy("COPY vehicle_staging FROM STDIN") as copy:
                    copy.write(vehicles)
            cur.execute(move)


def copy_floor(database_url: str, rows: int, batch: int, devices: int, base_ts: float, connections: int = 1,
               start: int = 0) -> dict:
    """Write ``rows`` fresh readings through staging tables with ``connections`` in parallel; return rows/s."""
    per_conn = rows // connections
    work = [_batches(start + c * per_conn, per_conn, batch, devices, base_ts) for c in range(connections)]
    ready = threading.Barrier(connections + 1)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_write, args=(database_url, w, ready, errors)) for w in work]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait(120)
    started = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    elapsed = time.perf_counter() - started
    written = per_conn * connections
    return {"rows": written, "batch": batch, "connections": connections, "seconds": round(elapsed, 3),
            "rows_per_s": round(written / elapsed, 1)}

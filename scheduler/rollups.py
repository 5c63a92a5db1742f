"""Hourly rollup maintenance: fold the drain's dirty marks into the rollups, exactly and incrementally.

The drain marks each device it wrote (first and last ts of the rows inserted) in the transaction
that writes them (sql/drain/*_write.sql). This job, run by its own ``rollups`` worker, takes a batch
of marks (deleting them in its transaction: a crash gives them back), and per device:

- *in order* (every new reading is newer than the last one the rollups hold, the steady-load case):
  counter_steps() judges only the frontier reading and the new ones, and their contributions are
  added to the rows (sql/rollups/*_append.sql). The 2 readings before the frontier come from the
  tail cache (rollup_tails, written by the previous fold), so the fold reads from raw history only
  the readings it folds; a device without a tail (its first fold, or after a recompute) looks them up;
- *late* (a reading older than what the rollups hold): the hours from the reading before it to the
  second reading after it, every reading whose contribution it may change, are recomputed from raw
  history (sql/rollups/*_recompute.sql).

Safe twice and with several jobs at once: a device is taken by one transaction at a time (an
advisory lock, sql/rollups/claim_marks.sql); the rebuild takes the exclusive form of a lock every
maintenance transaction holds shared, so the two never interleave.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
import redis
from psycopg import sql

from common.database import connect, load_sql, rollup_hour
from common.metrics import oldest_unwritten_millis
from common.redis_clients import data_client
from common.settings import Settings
from common.streams import DRAIN_BEHIND_KEY, KeySpace

log = logging.getLogger(__name__)

ROLLUPS_QUEUE = "rollups"
# Advisory locks: the space of per-device locks (two-key form), and the rebuild's (one-key form).
DEVICE_LOCK_CLASS = 727_274_015
REBUILD_LOCK = 727_274_016
MICROSECOND = timedelta(microseconds=1)
HOUR = timedelta(hours=1)
# How often a job asks whether the churned tables are due for their VACUUM (ROLLUP_VACUUM_SECONDS).
VACUUM_CHECK_SECONDS = 5.0
# How far back the frontier lookup reaches: counter_steps()'s 168 h neighbourhood and a bucket.
FRONTIER_REACH = timedelta(hours=170)


@dataclass(frozen=True)
class RollupKind:
    """What differs between the meter and the vehicle rollups."""

    name: str
    rollups: str
    readings: str
    id_column: str
    latest: str

    def max_power_kw(self, settings: Settings) -> float:
        """Return the kind's power ceiling of the counter rules."""
        return settings.max_meter_power_kw if self.name == "meter" else settings.max_vehicle_power_kw

    def composed(self, name: str) -> sql.Composed:
        """Return ``sql/rollups/<name>.sql`` with this kind's table and column names."""
        return sql.SQL(load_sql(f"rollups/{name}")).format(
            rollups=sql.Identifier(self.rollups), readings=sql.Identifier(self.readings),
            id=sql.Identifier(self.id_column), latest=sql.Identifier(self.latest))


ROLLUP_KINDS = {
    "meter": RollupKind("meter", "meter_hourly_rollups", "meter_readings", "meter_id", "meter_latest"),
    "vehicle": RollupKind("vehicle", "vehicle_hourly_rollups", "vehicle_readings", "vehicle_id",
                          "vehicle_latest"),
}


@dataclass
class MaintenanceTotals:
    """What one run did."""

    batches: int = 0
    devices: int = 0
    in_order: int = 0
    late: int = 0
    full: bool = False  # the last batch took as many marks as it may: more are waiting
    deferred: int = 0  # polls the fold waited for the drain (DrainFirst)


def _fold_kind(conn: psycopg.Connection, kind: RollupKind, marks: list[tuple[str, datetime, datetime]],
               settings: Settings, totals: MaintenanceTotals) -> None:
    ids = [m[0] for m in marks]
    since = min(m[1] for m in marks) - FRONTIER_REACH
    # The frontier from the tail cache where a device has one (within the lookup's horizon: a frontier
    # before `since` is none); the others look at their rollup rows.
    tails = {row[0]: row[1:] for row in conn.execute(load_sql("rollups/tails"),
                                                    {"kind": kind.name, "device_ids": ids})}
    frontier = {d: tail[0] for d, tail in tails.items() if rollup_hour(tail[0]) >= since}
    untailed = [i for i in ids if i not in tails]
    if untailed:
        frontier.update((row[0], row[2]) for row in conn.execute(kind.composed("frontier"),
                                                                 {"device_ids": untailed, "since": since}))
    warm, known, cold, late = [], [], [], []
    for device_id, min_ts, max_ts in marks:
        tail = tails.get(device_id)
        last = frontier.get(device_id)
        if last is not None and min_ts <= last:
            late.append((device_id, min_ts, max_ts))
        elif last is not None and tail is not None:
            warm.append((device_id, last - MICROSECOND, max_ts, last))
            _, prev_ts, prev_kwh, prev2_ts, prev2_kwh = tail
            known += [(device_id, ts, kwh) for ts, kwh in ((prev_ts, prev_kwh), (prev2_ts, prev2_kwh))
                      if ts is not None]
        else:
            cold.append((device_id, (last or min_ts) - MICROSECOND, max_ts, last))
    power = kind.max_power_kw(settings)
    if warm:
        _append(conn, kind, warm, power, known)
    if cold:
        _append(conn, kind, cold, power)
    # The append gives new rows their prior sums from the frontier row; a device without one (its
    # first rows, or back after a week) needs the look for the row before them.
    unanchored = [(a[0], rollup_hour(a[1])) for a in cold if a[3] is None]
    if unanchored:
        cumulate(conn, kind, unanchored)
    if late:
        spans = []
        for device_id, min_ts, max_ts in late:
            first, last = conn.execute(kind.composed("span"),
                                       {"device_id": device_id, "min_ts": min_ts, "max_ts": max_ts}).fetchone()
            spans.append((device_id, rollup_hour(first), rollup_hour(last)))
        recompute(conn, kind, spans, settings)
    totals.in_order += len(warm) + len(cold)
    totals.late += len(late)


def _append(conn: psycopg.Connection, kind: RollupKind, appends: list[tuple], max_power_kw: float,
            known: list[tuple] | None = None) -> None:
    """Run the in-order fold; ``known``: the 2 readings before each frontier (tails), else read from raw."""
    conn.execute(load_sql(f"rollups/{kind.name}_append"), {
        "device_ids": [a[0] for a in appends], "from_ts": [a[1] for a in appends],
        "to_ts": [a[2] for a in appends], "frontier_ts": [a[3] for a in appends], "max_power_kw": max_power_kw,
        "earliest_from": min(a[1] for a in appends), "latest_to": max(a[2] for a in appends),
        "known_ids": None if known is None else [k[0] for k in known],
        "known_ts": None if known is None else [k[1] for k in known],
        "known_kwh": None if known is None else [k[2] for k in known]})


def recompute(conn: psycopg.Connection, kind: RollupKind, spans: list[tuple[str, datetime, datetime]],
              settings: Settings) -> None:
    """Recompute the rows of buckets first_hour .. last_hour of each (device, first_hour, last_hour) from raw."""
    params = {"device_ids": [s[0] for s in spans], "from_hours": [s[1] for s in spans],
              "to_hours": [s[2] for s in spans]}
    conn.execute(load_sql("rollups/forget_tails"), {"kind": kind.name, "device_ids": params["device_ids"],
                                                    "to_hours": params["to_hours"]})
    conn.execute(kind.composed("delete_hours"), params)
    conn.execute(load_sql(f"rollups/{kind.name}_recompute"), {**params, "max_power_kw": kind.max_power_kw(settings)})
    cumulate(conn, kind, [(s[0], s[1]) for s in spans])


def cumulate(conn: psycopg.Connection, kind: RollupKind, changed: list[tuple[str, datetime]]) -> None:
    """Make the prior sums (prior_*, migration 0013) true from each (device, first changed hour) on."""
    earliest = min(c[1] for c in changed)
    conn.execute(load_sql(f"rollups/{kind.name}_cumulative"), {
        "device_ids": [c[0] for c in changed], "from_hours": [c[1] for c in changed],
        "since": earliest - FRONTIER_REACH, "earliest": earliest})


def maintain_once(conn: psycopg.Connection, settings: Settings, limit: int,
                  totals: MaintenanceTotals | None = None) -> int:
    """Fold one batch of marks into the rollups in one transaction; return how many devices it took."""
    totals = totals or MaintenanceTotals()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (REBUILD_LOCK,))
        claimed = conn.execute(load_sql("rollups/claim_marks"),
                               {"limit": limit, "lock_class": DEVICE_LOCK_CLASS}).fetchall()
        by_kind: dict[str, list] = {}
        for kind_name, device_id, min_ts, max_ts, _ in claimed:
            by_kind.setdefault(kind_name, []).append((device_id, min_ts, max_ts))
        for kind_name, marks in by_kind.items():
            _fold_kind(conn, ROLLUP_KINDS[kind_name], marks, settings, totals)
    totals.batches += bool(claimed)
    totals.devices += len(claimed)
    totals.full = bool(claimed) and claimed[0][4]
    return len(claimed)


class DrainFirst:
    """Hold the fold back while the drain is behind: history first.

    Behind: a drain's last read came back full (DRAIN_BEHIND_KEY, set by workers/drain.py), or the
    oldest unwritten reading is older than ROLLUP_DEFER_LAG_SECONDS (also when no drain runs).

    In a backlog (a catch-up after an outage, a burst) the fold and the drain compete for Postgres;
    the readings are safe only once written, and ingest is refused (503) while the backlog is over its
    limit. Folded later, each device's readings are also folded in fewer, larger spans. A mark that
    has waited ROLLUP_MAX_DEFER_SECONDS is folded anyway, so a drain that never catches up does not
    stop the rollups. Redis unreachable: no holding back (the fold needs only Postgres).
    """

    def __init__(self, client, settings: Settings):
        self.client = client
        self.keys = KeySpace.for_settings(settings)
        self.lag_ms = settings.rollup_defer_lag_seconds * 1000
        self.max_defer = settings.rollup_max_defer_seconds

    def holds(self, conn: psycopg.Connection) -> bool:
        """Tell whether the fold should wait now."""
        if not self.lag_ms:
            return False
        try:
            behind = bool(self.client.exists(DRAIN_BEHIND_KEY))
            if not behind:
                oldest = oldest_unwritten_millis(self.client, self.keys)
                behind = oldest is not None and time.time() * 1000 - oldest > self.lag_ms
        except redis.RedisError:
            return False
        if not behind:
            return False
        return not conn.execute(load_sql("rollups/marks_overdue"), {"seconds": self.max_defer}).fetchone()[0]


def maintain(settings: Settings, seconds: float = 0.0, conn: psycopg.Connection | None = None,
             stop: threading.Event | None = None, drain_first: DrainFirst | None = None) -> dict:
    """Fold the marks, then every ROLLUP_POLL_MS the marks committed meanwhile, until ``seconds`` have passed.

    A full batch (a backlog) is followed at once by the next; otherwise the job waits for the poll
    interval, so that at steady load a fold takes every device that reported in it: the cost of a fold
    is mostly per device and per statement, not per reading. One connection for the whole run: its
    statements are prepared once. ``drain_first``: wait while the drain is behind (the RQ job's).
    """
    deadline = time.monotonic() + seconds
    own = conn is None
    # jit off: the lateral counter_steps() plans over every partition look costly enough for JIT, whose
    # compilation took seconds per batch (10x the execution) for nothing.
    conn = conn or connect(settings, autocommit=True, application_name="energy-rollups", prepare_threshold=0,
                           options="-c jit=off")
    totals = MaintenanceTotals()
    interval = settings.rollup_vacuum_seconds
    checked = -float("inf")
    try:
        while True:
            if drain_first is not None and drain_first.holds(conn):
                totals.deferred += 1
            else:
                maintain_once(conn, settings, settings.rollup_batch_size, totals)
                # Asked of the server at most every VACUUM_CHECK_SECONDS: the last VACUUM may be another job's.
                if interval and time.monotonic() - checked >= min(interval, VACUUM_CHECK_SECONDS):
                    checked = time.monotonic()
                    if conn.execute(load_sql("rollups/vacuum_due"), {"seconds": interval}).fetchone()[0]:
                        vacuum_churned_tables(conn)
                if totals.full:
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop or threading.Event()).wait(min(remaining, settings.rollup_poll_ms / 1000)):
                break
    finally:
        if own:
            conn.close()
    return {"devices": totals.devices, "batches": totals.batches, "inOrder": totals.in_order, "late": totals.late,
            "deferred": totals.deferred}


def vacuum_churned_tables(conn: psycopg.Connection) -> None:
    """VACUUM what the fold rewrites at every reading: the marks, the tails, today's rollup partitions.

    At steady load each reading leaves a dead mark and a dead version of its device's frontier row and
    tail; left to autovacuum (off on some servers, a minute or more behind on others), they grew to tens
    of dead rows per live one and every fold statement slowed down scanning them.
    """
    day = datetime.now(UTC).strftime("%Y%m%d")
    tables = ["rollup_marks", "rollup_tails"] + [f"{kind.rollups}_{day}" for kind in ROLLUP_KINDS.values()]
    existing = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)", (tables,))}
    names = sql.SQL(", ").join(sql.Identifier(t) for t in tables if t in existing)
    # SKIP_LOCKED: a table another job is vacuuming right now is left to it instead of waited for.
    conn.execute(sql.SQL("VACUUM (ANALYZE, SKIP_LOCKED) {}").format(names))


def maintain_rollups() -> dict:
    """RQ job (queue ``rollups``): fold the pending dirty marks into the hourly rollups."""
    from workers.drain import STOP  # set by the worker on SIGTERM: the job ends after its batch

    settings = Settings.from_env()
    client = data_client(settings)
    try:
        return maintain(settings, settings.rollup_job_seconds, stop=STOP, drain_first=DrainFirst(client, settings))
    finally:
        client.close()


def rebuild(settings: Settings, first_day: date, last_day: date, batch_devices: int = 500,
            conn: psycopg.Connection | None = None) -> dict:
    """Recompute every rollup bucket of the UTC days first_day .. last_day from raw history.

    Idempotent: on a correct range it writes the same rows again. Devices go in batches, each its
    own transaction holding the rebuild lock, so maintenance waits for a batch, never for the whole run.
    """
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    end = datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC) + timedelta(days=1)
    own = conn is None
    conn = conn or connect(settings, autocommit=True, application_name="energy-rollups-rebuild",
                           options="-c jit=off")
    rows = {}
    try:
        for kind in ROLLUP_KINDS.values():
            ids = [r[0] for r in conn.execute(kind.composed("devices"))]
            rows[kind.name] = len(ids)
            for i in range(0, len(ids), batch_devices):
                batch = ids[i:i + batch_devices]
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (REBUILD_LOCK,))
                    recompute(conn, kind, [(d, start, end - HOUR) for d in batch], settings)
    finally:
        if own:
            conn.close()
    return {"from": first_day.isoformat(), "to": last_day.isoformat(), "devices": rows}

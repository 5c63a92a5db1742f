"""Drain the telemetry stream into Postgres through a consumer group; acknowledge only after commit.

The consumer group's pending entries list is the record of work not yet in Postgres: an entry is
acknowledged (XACK) only after the transaction holding it has committed. A worker that dies
leaves its entries pending; they are claimed again (XAUTOCLAIM) once idle for
``RECLAIM_IDLE_SECONDS``. Delivery is therefore at least once, and the write is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg
import redis

from common import metrics
from common.database import connect
from common.redis_clients import data_client
from common.settings import Settings
from common.streams import CONSUMER_GROUP, DEAD_LETTER_STREAM_KEY, KINDS, STREAM_KEY
from workers.history_writer import HistoryWriter, WriteResult

log = logging.getLogger(__name__)

# Set by DrainWorker when the platform asks the worker to stop (SIGTERM): the drain finishes the
# batch in hand, acknowledges it and returns.
STOP = threading.Event()

# How many times each entry failed to be written on its own (only entries that failed are here).
FAILURES_KEY = "telemetry:failures"
# SQLSTATE classes that mean "this data can never be written" (22: data exception, 23:
# integrity violation, which includes "no partition for this row"). Every other error is taken
# as "Postgres is unavailable or misconfigured right now": retried, never dead-lettered.
_POISON_SQLSTATE_CLASSES = ("22", "23")
_RECLAIM_CHECK_SECONDS = 5.0
_MAX_BACKOFF_SECONDS = 10.0

Entry = tuple[str, dict[str, str]]


def is_poison(exc: BaseException) -> bool:
    """Tell whether a Postgres error is caused by the data written rather than by the server."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and sqlstate[:2] in _POISON_SQLSTATE_CLASSES


@dataclass
class DrainTotals:
    """Counters of one drain run."""

    batches: int = 0
    entries_acked: int = 0
    rows_written: int = 0
    duplicates_skipped: int = 0
    conflicts: int = 0
    reclaimed: int = 0
    dead_lettered: int = 0
    write_failures: int = 0
    retries: int = 0


class PostgresUnavailableError(Exception):
    """Postgres could not take a batch for a reason unrelated to its data."""


class StreamDrainer:
    """Read the stream as one consumer of the group and write what it reads to Postgres."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        consumer: str,
        connect_db: Callable[[], psycopg.Connection] | None = None,
        stream_key: str = STREAM_KEY,
        group: str = CONSUMER_GROUP,
        dead_letter_key: str = DEAD_LETTER_STREAM_KEY,
    ):
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.connect_db = connect_db or (lambda: connect(settings))
        self.stream_key = stream_key
        self.group = group
        self.dead_letter_key = dead_letter_key
        self.totals = DrainTotals()
        self._writer: HistoryWriter | None = None
        self._own_pending_done = False
        self._next_reclaim = 0.0
        self._inflight: tuple[list[Entry], bool] | None = None
        self._unacked: tuple[list[str], bool] | None = None

    # -- Redis side ---------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and its consumer group if they do not exist yet."""
        try:
            self.client.xgroup_create(self.stream_key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.stream_key: start}, count=self.settings.drain_batch_size, block=block_ms
        )
        if not reply:
            return []
        # RESP2 answers [[stream, entries]], RESP3 {stream: [entries]}.
        entries = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
        # An entry deleted while pending comes back with no fields; nothing is left to write.
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    def reclaim(self) -> list[Entry]:
        """Claim entries that another consumer (or a dead run of this one) left idle too long."""
        _next, claimed, *_deleted = self.client.xautoclaim(
            self.stream_key,
            self.group,
            self.consumer,
            min_idle_time=self.settings.reclaim_idle_seconds * 1000,
            start_id="0-0",
            count=self.settings.drain_batch_size,
        )
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if claimed:
            self.totals.reclaimed += len(claimed)
            log.info("reclaimed idle entries", extra={"entries": len(claimed), "consumer": self.consumer})
            with contextlib.suppress(redis.RedisError):
                metrics.incr(self.client, "reclaimed_entries", len(claimed))
        return claimed

    def fetch(self, block_ms: int) -> tuple[list[Entry], bool]:
        """Return the next entries to write, and whether they were delivered before."""
        if not self._own_pending_done:
            # Entries this consumer read but never acknowledged: a run that was interrupted.
            self._own_pending_done = True
            entries = self._read("0", None)
            if entries:
                return entries, True
        if time.monotonic() >= self._next_reclaim:
            entries = self.reclaim()
            if entries:
                return entries, True
            self._next_reclaim = time.monotonic() + min(_RECLAIM_CHECK_SECONDS, self.settings.reclaim_idle_seconds)
        return self._read(">", block_ms), False

    def dead_letter(self, entry_id: str, fields: dict[str, str], failures: int, error: str) -> None:
        """Atomically copy an entry to the dead-letter stream with its error and acknowledge it."""
        record = {
            "id": entry_id,
            "k": fields.get("k", ""),
            "r": fields.get("r", ""),
            "error": error,
            "failures": failures,
            "failed_at": datetime.now(UTC).isoformat(),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_key, record)
        pipe.xack(self.stream_key, self.group, entry_id)
        pipe.hdel(FAILURES_KEY, entry_id)
        metrics.incr(pipe, "dead_lettered")
        pipe.execute()
        self.totals.dead_lettered += 1
        log.warning("dead-lettered entry", extra={"entry_id": entry_id, "failures": failures, "error": error})

    def ack(self, ids: list[str], redelivered: bool = False) -> None:
        """Acknowledge entries whose rows are committed (and forget their past failures)."""
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.stream_key, self.group, *ids)
        if redelivered:
            pipe.hdel(FAILURES_KEY, *ids)
        pipe.execute()
        self.totals.entries_acked += len(ids)

    # -- Postgres side ------------------------------------------------------------------------

    def _writer_or_connect(self) -> HistoryWriter:
        if self._writer is None or self._writer.conn.closed:
            self._writer = HistoryWriter(self.connect_db())
        return self._writer

    def close(self) -> None:
        """Close the Postgres connection."""
        if self._writer is not None:
            self._writer.conn.close()
            self._writer = None

    def _write_rows(self, entries: list[Entry]) -> WriteResult:
        rows: dict[str, list[str]] = {kind: [] for kind in KINDS}
        for _entry_id, fields in entries:
            rows[fields["k"]].append(fields["r"])
        try:
            return self._writer_or_connect().write(rows)
        except psycopg.Error as exc:
            if is_poison(exc):
                raise
            self.close()
            raise PostgresUnavailableError(str(exc)) from exc

    def write(self, entries: list[Entry]) -> list[str]:
        """Write entries to Postgres; return the ids that are committed and may be acknowledged.

        A batch that fails because of its data is written again entry by entry, so one bad entry
        cannot hold back the others; the bad one stays pending until it is dead-lettered.
        """
        malformed = [(i, f) for i, f in entries if f.get("k") not in KINDS or "r" not in f]
        for entry_id, fields in malformed:
            self.dead_letter(entry_id, fields, 1, "malformed stream record")
        entries = [(i, f) for i, f in entries if f.get("k") in KINDS and "r" in f]
        if not entries:
            return []
        try:
            result = self._write_rows(entries)
            self._count(result)
            return [entry_id for entry_id, _ in entries]
        except psycopg.Error as exc:
            if len(entries) == 1:
                self._record_failure(entries[0], exc)
                return []
            log.warning("batch failed; writing its entries one by one",
                        extra={"batch_size": len(entries), "error": str(exc).strip()})
        committed = []
        for entry in entries:
            try:
                self._count(self._write_rows([entry]))
                committed.append(entry[0])
            except psycopg.Error as exc:
                self._record_failure(entry, exc)
        return committed

    def _record_failure(self, entry: Entry, exc: BaseException) -> None:
        """Count a failed write of one entry; dead-letter it at DEAD_LETTER_AFTER failures.

        Below the limit the entry stays pending and is claimed again once idle, so the tries are
        spaced by RECLAIM_IDLE_SECONDS (a missing partition may appear in the meantime).
        """
        entry_id, fields = entry
        self.totals.write_failures += 1
        message = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
        failures = int(self.client.hincrby(FAILURES_KEY, entry_id, 1))
        log.warning("entry could not be written", extra={"entry_id": entry_id, "failures": failures, "error": message})
        with contextlib.suppress(redis.RedisError):
            metrics.incr(self.client, "drain_write_failures")
        if failures >= self.settings.dead_letter_after:
            self.dead_letter(entry_id, fields, failures, message)

    def _count(self, result: WriteResult) -> None:
        self.totals.batches += 1
        self.totals.rows_written += result.rows_written
        self.totals.duplicates_skipped += result.rows_received - result.rows_written
        self.totals.conflicts += result.conflicts
        if result.conflicts:
            # Counted at commit, not at XACK: a crash in between must not lose the count (a redelivery records
            # no conflict twice, so it adds nothing).
            with contextlib.suppress(redis.RedisError):
                metrics.incr(self.client, "reading_conflicts", result.conflicts)

    # -- the loop -------------------------------------------------------------------------------

    def drain_once(self, block_ms: int | None = None) -> int:
        """Fetch one batch, write it, acknowledge it; return how many entries were acknowledged.

        If Postgres is unavailable the batch is kept and retried by the next call, without reading
        again; if Redis fails after the commit, the acknowledgement is retried by the next call.
        """
        if self._unacked:
            ids, redelivered = self._unacked
            self.ack(ids, redelivered)
            self._unacked = None
        if self._inflight is None:
            self._inflight = self.fetch(self.settings.drain_block_ms if block_ms is None else block_ms)
        entries, redelivered = self._inflight
        if not entries:
            self._inflight = None
            return 0
        started = time.monotonic()
        rows_before, duplicates_before = self.totals.rows_written, self.totals.duplicates_skipped
        committed = self.write(entries)
        self._inflight = None
        self._unacked = (committed, redelivered)
        self.ack(committed, redelivered)
        self._unacked = None
        seconds = time.monotonic() - started
        rows = self.totals.rows_written - rows_before
        duplicates = self.totals.duplicates_skipped - duplicates_before
        self._record_batch(len(committed), rows, duplicates, seconds)
        # Per batch: DEBUG (the scheduler's periodic ingest summary says how much was written).
        log.debug(
            "drained batch",
            extra={
                "batch_size": len(entries),
                "committed": len(committed),
                "rows": rows,
                "duplicates": duplicates,
                "redelivered": redelivered,
                "duration_ms": round(seconds * 1000, 1),
                # How far behind real time the drain is: age of the batch's oldest entry at commit.
                "lag_seconds": round(max(0.0, time.time() - metrics.entry_id_millis(entries[0][0]) / 1000), 3),
                "consumer": self.consumer,
            },
        )
        return len(committed)

    def _record_batch(self, committed: int, rows: int, duplicates: int, seconds: float) -> None:
        """Add a committed batch to the shared counters (a metric lost to a Redis error is only a metric)."""
        if not committed:
            return
        with contextlib.suppress(redis.RedisError):
            pipe = self.client.pipeline(transaction=False)
            metrics.incr(pipe, "entries_acked", committed)
            metrics.incr(pipe, "rows_written", rows)
            metrics.incr(pipe, "duplicates_skipped", duplicates)
            metrics.observe_drain_batch(pipe, seconds)
            pipe.execute()

    def run(
        self, seconds: float, stop: threading.Event = STOP, heartbeat: Callable[[], None] | None = None
    ) -> DrainTotals:
        """Drain until ``seconds`` have passed or ``stop`` is set; back off while a server is down."""
        deadline = time.monotonic() + seconds
        backoff = 0.1
        group_ready = False
        while time.monotonic() < deadline and not stop.is_set():
            if heartbeat:
                with contextlib.suppress(redis.RedisError):
                    heartbeat()
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            try:
                if not group_ready:
                    self.ensure_group()
                    group_ready = True
                acked = self.drain_once(max(10, min(self.settings.drain_block_ms, remaining_ms)))
                backoff = 0.1
                if 0 < acked < self.settings.drain_batch_size:
                    # Caught up: linger (DRAIN_LINGER_MS) so the next batch collects what arrives
                    # meanwhile. Every batch costs a transaction and a few Redis round trips
                    # whatever its size; without the pause a drain that keeps up writes batches of
                    # one reading at ~1.5 ms of worker CPU each (measured by the benchmark).
                    linger = self.settings.drain_linger_ms / 1000
                    stop.wait(min(linger, max(0.0, deadline - time.monotonic())))
            except (PostgresUnavailableError, redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                self.totals.retries += 1
                log.warning("drain paused", extra={"retry_in_seconds": backoff, "error": str(exc).strip()})
                stop.wait(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted (Redis lost its data): start again
                    group_ready = False
                    self._inflight = self._unacked = None
                    continue
                raise
        return self.totals


def consumer_name() -> str:
    """Name this consumer after the RQ worker running it (stable across its jobs), else host and pid."""
    try:
        from rq import get_current_job

        job = get_current_job()
        if job is not None and job.worker_name:
            return job.worker_name
    except Exception:  # noqa: BLE001 - outside RQ there is simply no job
        pass
    return f"{socket.gethostname()}.{os.getpid()}"


def drain_stream(slot: int = 0, seconds: float | None = None) -> dict:
    """RQ job: drain the stream for a while as this worker's consumer, then hand over to a successor."""
    from workers import drain_slots

    settings = Settings.from_env()
    seconds = settings.drain_job_seconds if seconds is None else seconds
    # A blocking XREADGROUP must not outlast the socket timeout (redis-py raises TimeoutError).
    client = data_client(settings, socket_timeout=settings.drain_block_ms / 1000 + settings.redis_socket_timeout)
    drainer = StreamDrainer(settings, client, consumer_name())
    try:
        totals = drainer.run(seconds, heartbeat=lambda: drain_slots.heartbeat(client, slot, settings))
    finally:
        drainer.close()
    if not STOP.is_set():
        drain_slots.enqueue_successor(slot, settings)
    return asdict(totals)

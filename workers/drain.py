"""Drain the telemetry streams (one per shard) into Postgres through consumer groups; acknowledge after commit.

The consumer group's pending entries list is the record of work not yet in Postgres: an entry is
acknowledged (XACK) only after the transaction holding it has committed. A worker that dies
leaves its entries pending; they are claimed again (XAUTOCLAIM) once idle for
``RECLAIM_IDLE_SECONDS``. Delivery is therefore at least once, and the write is idempotent.

An entry holds one ingest request's readings of one shard (common/streams.py). A reading that
Postgres refuses for its data (a poison reading) is found by bisecting its entry's rows: the
others are committed, and only it is retried and, after DEAD_LETTER_AFTER failures, dead-lettered.
"""

from __future__ import annotations

import contextlib
import json
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
from common.redis_clients import data_client, rq_client
from common.settings import Settings
from common.streams import CONSUMER_GROUP, DRAIN_BEHIND_KEY, KINDS, KeySpace, decode_record
from workers.history_writer import HistoryWriter, WriteResult

log = logging.getLogger(__name__)

# Set by DrainWorker when the platform asks the worker to stop (SIGTERM): the drain finishes the
# batch in hand, acknowledges it and returns.
STOP = threading.Event()

# SQLSTATE classes that mean "this data can never be written" (22: data exception, 23:
# integrity violation, which includes "no partition for this row"). Every other error is taken
# as "Postgres is unavailable or misconfigured right now": retried, never dead-lettered.
_POISON_SQLSTATE_CLASSES = ("22", "23")
_RECLAIM_CHECK_SECONDS = 5.0
_MAX_BACKOFF_SECONDS = 10.0
# The shortest blocking read (ms) when a drain waits on several shards in turn.
_MIN_BLOCK_MS = 10
# How long the "drain is behind" signal outlives the last full read (a few batches' time).
_BEHIND_SIGNAL_MS = 2000

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


class _Shard:
    """One shard's stream as this consumer sees it: keys, and the state of its last batch."""

    def __init__(self, keys: KeySpace, shard: int):
        self.shard = shard
        self.stream = keys.stream(shard)
        self.dead = keys.dead_letters(shard)
        self.failures = keys.failures(shard)
        self.own_pending_done = False
        self.next_reclaim = 0.0
        self.inflight: tuple[list[Entry], bool] | None = None
        self.unacked: tuple[list[str], bool] | None = None
        # Entries per read: an entry holds a whole request's readings (up to MAX_READINGS_PER_REQUEST),
        # so the count follows the rows per entry seen last, to keep a batch near DRAIN_BATCH_SIZE
        # rows. The first read takes one entry: its size is not known yet.
        self.count = 1
        # Whether the last read got as many entries as it asked for: more are likely waiting. Such a
        # read sized from a batch before (not the first, of one entry) means the drain is behind.
        self.more_waiting = False
        self.behind = False
        self.sized = False


class StreamDrainer:
    """Read shards' streams as one consumer of their groups and write what it reads to Postgres."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        consumer: str,
        connect_db: Callable[[], psycopg.Connection] | None = None,
        shards: list[int] | None = None,
        keys: KeySpace | None = None,
        group: str = CONSUMER_GROUP,
    ):
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.connect_db = connect_db or (lambda: connect(settings))
        self.keys = keys or KeySpace.for_settings(settings)
        self.group = group
        shards = list(range(self.keys.shards)) if shards is None else shards
        self.shards = [_Shard(self.keys, shard) for shard in shards]
        self.totals = DrainTotals()
        self._writer: HistoryWriter | None = None
        self._next_shard = 0

    def _shard(self, shard: int | None) -> _Shard:
        if shard is None:
            return self.shards[0]
        return next(s for s in self.shards if s.shard == shard)

    # -- Redis side ---------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create each shard's stream and consumer group if they do not exist yet."""
        for s in self.shards:
            try:
                self.client.xgroup_create(s.stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _read(self, s: _Shard, start: str, block_ms: int | None, count: int | None = None) -> list[Entry]:
        count = count or s.count
        reply = self.client.xreadgroup(self.group, self.consumer, {s.stream: start}, count=count, block=block_ms)
        if not reply:
            s.more_waiting = s.behind = False
            return []
        # RESP2 answers [[stream, entries]], RESP3 {stream: [entries]}.
        entries = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
        s.more_waiting = len(entries) >= count
        s.behind = s.more_waiting and s.sized
        # An entry deleted while pending comes back with no fields; nothing is left to write.
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    def read_new(self, shard: int | None = None, block_ms: int | None = None) -> list[Entry]:
        """Read a shard's undelivered entries without writing them (they become pending to this consumer)."""
        s = self._shard(shard)
        s.own_pending_done = True
        return self._read(s, ">", block_ms, self.settings.drain_batch_size)

    def reclaim(self, shard: int | None = None) -> list[Entry]:
        """Claim entries of a shard that another consumer (or a dead run of this one) left idle too long."""
        s = self._shard(shard)
        _next, claimed, *_deleted = self.client.xautoclaim(
            s.stream,
            self.group,
            self.consumer,
            min_idle_time=self.settings.reclaim_idle_seconds * 1000,
            start_id="0-0",
            count=s.count,
        )
        s.more_waiting = len(claimed) >= s.count
        s.behind = s.more_waiting and s.sized
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if claimed:
            self.totals.reclaimed += len(claimed)
            log.info("reclaimed idle entries",
                     extra={"entries": len(claimed), "consumer": self.consumer, "shard": s.shard})
            with contextlib.suppress(redis.RedisError):
                metrics.incr(self.client, "reclaimed_entries", len(claimed))
        return claimed

    def fetch(self, block_ms: int | None, shard: int | None = None) -> tuple[list[Entry], bool]:
        """Return a shard's next entries to write, and whether they were delivered before."""
        s = self._shard(shard)
        if not s.own_pending_done:
            # Entries this consumer read but never acknowledged: a run that was interrupted.
            s.own_pending_done = True
            entries = self._read(s, "0", None)
            if entries:
                return entries, True
        if time.monotonic() >= s.next_reclaim:
            entries = self.reclaim(s.shard)
            if entries:
                return entries, True
            s.next_reclaim = time.monotonic() + min(_RECLAIM_CHECK_SECONDS, self.settings.reclaim_idle_seconds)
        return self._read(s, ">", block_ms), False

    def dead_letter(self, entry_id: str, records: list[dict[str, str]], failures: int, error: str,
                    shard: int | None = None) -> None:
        """Atomically copy readings of an entry to its shard's dead-letter stream and acknowledge the entry.

        ``records`` are the readings given up on, as ``{"k": kind, "r": COPY row}`` (and their own
        ``error``, when it differs); the rest of the entry is already committed.
        """
        s = self._shard(shard)
        failed_at = datetime.now(UTC).isoformat()
        pipe = self.client.pipeline(transaction=True)  # one shard's keys: one cluster slot
        for record in records:
            pipe.xadd(s.dead, {"id": entry_id, "error": error, **record, "failures": failures, "failed_at": failed_at})
        pipe.xack(s.stream, self.group, entry_id)
        pipe.hdel(s.failures, entry_id)
        pipe.execute()
        self.totals.dead_lettered += len(records)
        with contextlib.suppress(redis.RedisError):  # a metric: its key is in another cluster slot
            metrics.incr(self.client, "dead_lettered", len(records))
        log.warning("dead-lettered readings",
                    extra={"entry_id": entry_id, "readings": len(records), "failures": failures, "error": error,
                           "shard": s.shard})

    def ack(self, ids: list[str], redelivered: bool = False, shard: int | None = None) -> None:
        """Acknowledge entries whose rows are committed (and forget their past failures)."""
        if not ids:
            return
        s = self._shard(shard)
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(s.stream, self.group, *ids)
        if redelivered:
            pipe.hdel(s.failures, *ids)
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

    def _write_rows(self, rows: dict[str, list[str]]) -> WriteResult:
        try:
            return self._writer_or_connect().write(rows)
        except psycopg.Error as exc:
            if is_poison(exc):
                raise
            self.close()
            raise PostgresUnavailableError(str(exc)) from exc

    def write(self, entries: list[Entry], shard: int | None = None) -> list[str]:
        """Write a shard's entries to Postgres; return the ids that are committed and may be acknowledged.

        A batch that fails because of its data is written again entry by entry, and an entry that
        fails on its own is bisected down to its poison readings: everything else is committed;
        the entry stays pending until its poison readings are dead-lettered.
        """
        s = self._shard(shard)
        decoded: list[tuple[str, dict[str, list[str]]]] = []
        for entry_id, fields in entries:
            rows = decode_record(fields)
            if rows is None:
                raw = json.dumps(fields, sort_keys=True)[:10_000]
                self.dead_letter(entry_id, [{"k": fields.get("k", ""), "r": fields.get("r", raw)}], 1,
                                 "malformed stream record", s.shard)
            else:
                decoded.append((entry_id, rows))
        if not decoded:
            return []
        if len(decoded) > 1:
            try:
                self._count(self._write_rows(_merged(rows for _, rows in decoded)))
                return [entry_id for entry_id, _ in decoded]
            except psycopg.Error as exc:
                log.warning("batch failed; writing its entries one by one",
                            extra={"batch_size": len(decoded), "error": str(exc).strip()})
        committed = []
        for entry_id, rows in decoded:
            try:
                self._count(self._write_rows(rows))
                committed.append(entry_id)
            except psycopg.Error as exc:
                self._isolate_poison(s, entry_id, rows, exc)
        return committed

    def _isolate_poison(self, s: _Shard, entry_id: str, rows: dict[str, list[str]], exc: psycopg.Error) -> None:
        """Bisect an entry that Postgres refuses: commit its good rows, count a failure of its poison ones."""
        flat = [(kind, row) for kind in KINDS for row in rows.get(kind, ())]
        poison: list[tuple[str, str, psycopg.Error]] = []

        def attempt(part) -> psycopg.Error | None:
            try:
                self._count(self._write_rows(_by_kind(part)))
                return None
            except psycopg.Error as error:
                return error

        def bisect(part, error: psycopg.Error) -> None:
            if len(part) == 1:
                poison.append((*part[0], error))
                return
            middle = len(part) // 2
            for half in (part[:middle], part[middle:]):
                half_error = attempt(half)
                if half_error is not None:
                    bisect(half, half_error)

        bisect(flat, exc)
        self._record_failure(s, entry_id, poison)

    def _record_failure(self, s: _Shard, entry_id: str, poison: list[tuple[str, str, psycopg.Error]]) -> None:
        """Count a failed write of an entry's poison readings; dead-letter them at DEAD_LETTER_AFTER failures.

        Below the limit the entry stays pending and is claimed again once idle, so the tries are
        spaced by RECLAIM_IDLE_SECONDS (a missing partition may appear in the meantime); its good
        rows are written again then, as duplicates history skips.
        """
        self.totals.write_failures += 1
        first = poison[0][2] if poison else None
        message = f"{type(first).__name__}: {str(first).strip()}"[:2000]
        failures = int(self.client.hincrby(s.failures, entry_id, 1))
        log.warning("entry could not be written in full",
                    extra={"entry_id": entry_id, "poison_readings": len(poison), "failures": failures,
                           "error": message, "shard": s.shard})
        with contextlib.suppress(redis.RedisError):
            metrics.incr(self.client, "drain_write_failures")
        if failures >= self.settings.dead_letter_after:
            records = [{"k": kind, "r": row, "error": f"{type(e).__name__}: {str(e).strip()}"[:2000]}
                       for kind, row, e in poison]
            self.dead_letter(entry_id, records, failures, message, s.shard)

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
        """Drain one batch of each shard (blocking only when all are empty); return the entries acknowledged."""
        block_ms = self.settings.drain_block_ms if block_ms is None else block_ms
        if len(self.shards) == 1:
            return self._drain_shard(self.shards[0], block_ms)
        acked = sum(self._drain_shard(s, None) for s in self.shards)
        if acked or not block_ms:
            return acked
        # All empty: wait on each shard in turn, so that a drain is never more than block_ms behind.
        per_shard = max(_MIN_BLOCK_MS, block_ms // len(self.shards))
        for _ in range(len(self.shards)):
            s = self.shards[self._next_shard]
            self._next_shard = (self._next_shard + 1) % len(self.shards)
            acked = self._drain_shard(s, per_shard)
            if acked:
                return acked
        return 0

    def _drain_shard(self, s: _Shard, block_ms: int | None) -> int:
        """Fetch one batch of a shard, write it, acknowledge it; return how many entries were acknowledged.

        If Postgres is unavailable the batch is kept and retried by the next call, without reading
        again; if Redis fails after the commit, the acknowledgement is retried by the next call.
        """
        if s.unacked:
            ids, redelivered = s.unacked
            self.ack(ids, redelivered, s.shard)
            s.unacked = None
        if s.inflight is None:
            s.inflight = self.fetch(block_ms, s.shard)
        entries, redelivered = s.inflight
        if not entries:
            s.inflight = None
            return 0
        started = time.monotonic()
        rows_before, duplicates_before = self.totals.rows_written, self.totals.duplicates_skipped
        committed = self.write(entries, s.shard)
        s.inflight = None
        s.unacked = (committed, redelivered)
        self.ack(committed, redelivered, s.shard)
        s.unacked = None
        seconds = time.monotonic() - started
        rows = self.totals.rows_written - rows_before
        duplicates = self.totals.duplicates_skipped - duplicates_before
        received = rows + duplicates
        if received:
            s.count = max(1, min(self.settings.drain_batch_size,
                                 self.settings.drain_batch_size * len(entries) // received))
            s.sized = True
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
                "shard": s.shard,
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

    def _signal_behind(self) -> None:
        """Tell the rollups fold that this drain is behind (a full read): it waits, history first."""
        with contextlib.suppress(redis.RedisError):  # only a hint: the fold also watches the drain's lag
            self.client.set(DRAIN_BEHIND_KEY, self.consumer, px=_BEHIND_SIGNAL_MS)

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
                acked = self.drain_once(max(_MIN_BLOCK_MS, min(self.settings.drain_block_ms, remaining_ms)))
                backoff = 0.1
                if acked and any(s.more_waiting for s in self.shards):
                    if any(s.behind for s in self.shards):
                        self._signal_behind()
                elif acked:
                    # Caught up (every read got fewer entries than it asked for): linger
                    # (DRAIN_LINGER_MS) so the next batch collects what arrives meanwhile. Every
                    # batch costs a transaction and a few Redis round trips whatever its size;
                    # without the pause a drain that keeps up writes batches of one reading at
                    # ~1.5 ms of worker CPU each (measured by the benchmark). A full read goes
                    # straight on; its entry count says nothing (an entry holds a whole request).
                    linger = self.settings.drain_linger_ms / 1000
                    stop.wait(min(linger, max(0.0, deadline - time.monotonic())))
            except (PostgresUnavailableError, redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError) as exc:
                self.totals.retries += 1
                log.warning("drain paused", extra={"retry_in_seconds": backoff, "error": str(exc).strip()})
                stop.wait(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # a stream was deleted (Redis lost its data): start again
                    group_ready = False
                    for s in self.shards:
                        s.inflight = s.unacked = None
                    continue
                raise
        return self.totals


def _merged(parts) -> dict[str, list[str]]:
    """Return the rows of several entries together, by kind."""
    rows: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for part in parts:
        for kind, kind_rows in part.items():
            rows[kind] += kind_rows
    return rows


def _by_kind(pairs) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for kind, row in pairs:
        rows[kind].append(row)
    return rows


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


def drain_stream(slot: int = 0, seconds: float | None = None, slots: int | None = None) -> dict:
    """RQ job: drain the slot's shards for a while as this worker's consumer, then hand over to a successor.

    ``slots`` is how many drain slots there were when the job was enqueued: slot s drains the
    shards s, s + slots, s + 2 * slots... (workers/drain_slots.py).
    """
    from workers import drain_slots

    settings = Settings.from_env()
    seconds = settings.drain_job_seconds if seconds is None else seconds
    keys = KeySpace.for_settings(settings)
    rq_connection = rq_client(settings)
    if slots is None:
        slots = drain_slots.desired_slots(rq_connection, settings)
    # A blocking XREADGROUP must not outlast the socket timeout (redis-py raises TimeoutError).
    client = data_client(settings, socket_timeout=settings.drain_block_ms / 1000 + settings.redis_socket_timeout)
    shards = drain_slots.shards_of_slot(slot, slots, keys.shards)
    drainer = StreamDrainer(settings, client, consumer_name(), shards=shards, keys=keys)
    try:
        totals = drainer.run(seconds, heartbeat=lambda: drain_slots.heartbeat(rq_connection, slot, settings))
    finally:
        drainer.close()
        client.close()
    if not STOP.is_set():
        drain_slots.enqueue_successor(slot, settings)
    return asdict(totals)

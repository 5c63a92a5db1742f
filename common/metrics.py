"""Metrics shared by every process: counters kept in Redis, and the stream's load read from Redis.

Counters live in one Redis hash so that ``GET /metrics`` on any web process (any gunicorn worker,
any dyno or container) reports the totals of the whole deployment, including what the workers
did. Web processes buffer their increments in memory and flush them in one round trip at most
every ``FLUSH_SECONDS`` (and on every scrape), so the ingest hot path pays no extra round trip.
Workers add theirs once per batch. Gauges (backlog, pending...) are read at scrape time.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import redis

from common.streams import CONSUMER_GROUP, COUNTERS_KEY, DRAIN_SECONDS_KEY, SINGLE, KeySpace

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25

# name -> (help, label names). Exposed as ``energy_<name>_total``.
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "readings_accepted": ("Readings accepted by POST /v1/telemetry (taken by Redis), by kind.", ("kind",)),
    "readings_rejected": (
        "Readings refused by POST /v1/telemetry, by kind (meter, vehicle, unknown) and reason "
        "(invalid: failed validation, overloaded: backpressure 503, forbidden: a device key sent another "
        "device, rate_limited: over the key's limit, not_stored: Redis or its replicas did not confirm the write).",
        ("kind", "reason"),
    ),
    "requests_rejected": (
        "HTTP requests refused by access control, by reason (unauthorized: 401, forbidden: 403, "
        "rate_limited: 429).",
        ("reason",),
    ),
    "rows_written": ("History rows inserted into Postgres by the drain (duplicates not counted).", ()),
    "duplicates_skipped": ("Rows the drain received that history already held (at-least-once redelivery).", ()),
    "reading_conflicts": ("Duplicates with other values than the stored reading, recorded in reading_conflicts.", ()),
    "entries_acked": ("Stream entries acknowledged after their rows were committed.", ()),
    "drain_write_failures": ("Failed attempts to write one stream entry (it stays pending and is retried).", ()),
    "dead_lettered": ("Stream entries moved to the dead-letter stream after repeated write failures.", ()),
    "reclaimed_entries": ("Pending entries claimed from an idle or dead consumer.", ()),
    "stream_trimmed_entries": ("Acknowledged entries removed from the stream by the trim job.", ()),
    "partitions_dropped": ("Daily history partitions dropped by the retention job.", ()),
}
DRAIN_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_INF = "+Inf"


def counter_field(name: str, *labels: str) -> str:
    """Return the hash field of a counter with its label values, e.g. ``readings_accepted|meter``."""
    if name not in COUNTERS or len(labels) != len(COUNTERS[name][1]):
        raise ValueError(f"unknown counter or wrong labels: {name}{labels}")
    return "|".join((name, *labels))


def parse_counter_field(field: str) -> tuple[str, tuple[str, ...]]:
    """Split a counter's hash field into its name and label values."""
    name, *labels = field.split("|")
    return name, tuple(labels)


def incr(client: redis.Redis, name: str, amount: int = 1, *labels: str) -> None:
    """Add ``amount`` to a counter (``client`` may be a pipeline)."""
    if amount:
        client.hincrby(COUNTERS_KEY, counter_field(name, *labels), amount)


def observe_drain_batch(client: redis.Redis, seconds: float) -> None:
    """Record one drain batch's duration in the histogram (``client`` may be a pipeline)."""
    index = bisect.bisect_left(DRAIN_BATCH_BUCKETS, seconds)
    bucket = str(DRAIN_BATCH_BUCKETS[index]) if index < len(DRAIN_BATCH_BUCKETS) else _INF
    client.hincrby(DRAIN_SECONDS_KEY, bucket, 1)
    client.hincrbyfloat(DRAIN_SECONDS_KEY, "sum", seconds)


def read_counters(client: redis.Redis) -> dict[str, dict[tuple[str, ...], int]]:
    """Return every counter: name -> {label values: value}."""
    out: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in COUNTERS}
    for field, value in client.hgetall(COUNTERS_KEY).items():
        field = field.decode() if isinstance(field, bytes) else field
        name, labels = parse_counter_field(field)
        if name in out:
            out[name][labels] = int(value)
    return out


def read_drain_histogram(client: redis.Redis) -> tuple[list[tuple[str, int]], float, int]:
    """Return the drain batch histogram as (cumulative buckets, sum, count)."""
    raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in client.hgetall(DRAIN_SECONDS_KEY).items()}
    cumulative, running = [], 0
    for bound in (*map(str, DRAIN_BATCH_BUCKETS), _INF):
        running += int(raw.get(bound, 0))
        cumulative.append((bound, running))
    return cumulative, float(raw.get("sum", 0.0)), running


class CounterBuffer:
    """Counter increments of one web process, held in memory and flushed to Redis in one round trip."""

    def __init__(self, client_getter: Callable[[], redis.Redis], flush_seconds: float = FLUSH_SECONDS):
        self._client_getter = client_getter
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._last_flush = time.monotonic()
        self._flusher: threading.Thread | None = None

    def add(self, name: str, amount: int = 1, *labels: str) -> None:
        """Count ``amount``; flush now if the last flush is older than the flush interval."""
        if not amount:
            return
        field = counter_field(name, *labels)
        with self._lock:
            self._pending[field] += amount
        if time.monotonic() - self._last_flush >= self._flush_seconds:
            with contextlib.suppress(redis.RedisError):
                self.flush()

    def flush(self) -> int:
        """Write the buffered increments to Redis; keep them if Redis fails. Return how many fields."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._last_flush = time.monotonic()
        if not pending:
            return 0
        try:
            pipe = self._client_getter().pipeline(transaction=False)
            for field, amount in pending.items():
                pipe.hincrby(COUNTERS_KEY, field, amount)
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._pending.update(pending)
            raise
        return len(pending)

    def start_flusher(self, interval: float = 1.0) -> None:
        """Flush from a daemon thread every ``interval`` seconds (for processes that may go idle)."""
        if self._flusher is not None and self._flusher.is_alive():
            return

        def loop() -> None:
            while True:
                time.sleep(interval)
                try:
                    self.flush()
                except redis.RedisError as exc:
                    log.warning("metrics flush failed", extra={"error": str(exc)})

        self._flusher = threading.Thread(target=loop, name="metrics-flusher", daemon=True)
        self._flusher.start()


@dataclass(frozen=True)
class StreamLoad:
    """How much work the stream holds for the drain, and how full Redis is."""

    length: int  # XLEN: entries still in the stream (acknowledged ones stay until trimmed)
    undelivered: int | None  # the group's lag: entries never read by any consumer (None if unknown)
    pending: int  # read but not yet acknowledged
    used_memory: int
    maxmemory: int  # 0: no limit configured

    @property
    def backlog(self) -> int:
        """Entries not yet written to Postgres: undelivered + pending (XLEN if the lag is unknown)."""
        if self.undelivered is None:
            return self.length
        return self.undelivered + self.pending


def _decoded(info: dict) -> dict:
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}


def read_stream_load(client: redis.Redis, keys: KeySpace = SINGLE, group: str = CONSUMER_GROUP) -> StreamLoad:
    """Read the backlog summed over every shard's stream, and the fullest node's memory.

    On a single Redis this is one round trip (XINFO GROUPS and XLEN per shard, INFO memory); on a
    cluster one pipeline over the shards' nodes plus INFO memory of every primary.
    """
    from common.redis_clients import is_cluster

    cluster = is_cluster(client)
    streams = keys.all_streams()
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
    if not cluster:
        pipe.info("memory")
    replies = pipe.execute(raise_on_error=False)
    length_total, undelivered_total, pending_total = 0, 0, 0
    lag_known = True
    for groups, length in zip(replies[0:2 * len(streams):2], replies[1:2 * len(streams):2], strict=True):
        if isinstance(length, Exception):
            raise length
        undelivered: int | None = int(length)  # no stream or no group yet: everything is undelivered
        pending = 0
        if isinstance(groups, list):
            for info in map(_decoded, groups):
                if info.get("name") in (group, group.encode()):
                    lag = info.get("lag")
                    undelivered = None if lag is None else int(lag)
                    pending = int(info.get("pending") or 0)
        elif not (isinstance(groups, redis.ResponseError) and "no such key" in str(groups)):
            raise groups
        length_total += int(length)
        pending_total += pending
        if undelivered is None:
            lag_known = False
        else:
            undelivered_total += undelivered
    if cluster:
        memory = _fullest_node(client)
    else:
        memory = replies[-1]
        if isinstance(memory, redis.ResponseError):
            memory = {}  # INFO disabled (some hosted Redis, fakeredis): the memory check is skipped
        elif isinstance(memory, Exception):
            raise memory
    return StreamLoad(
        length=length_total,
        undelivered=undelivered_total if lag_known else None,
        pending=pending_total,
        used_memory=int(memory.get("used_memory", 0)),
        maxmemory=int(memory.get("maxmemory", 0)),
    )


def _fullest_node(client) -> dict:
    """Return INFO memory of the cluster primary closest to its maxmemory (the most used one if none has one)."""
    from redis.cluster import RedisCluster

    try:
        infos = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
    except redis.ResponseError:
        return {}
    if not isinstance(infos, dict) or "used_memory" in infos:
        return infos if isinstance(infos, dict) else {}

    def fullness(info: dict) -> tuple[float, int]:
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        return (used / limit if limit else 0.0, used)

    return max(infos.values(), key=fullness, default={})


def read_pending_and_dead(client: redis.Redis, keys: KeySpace = SINGLE,
                          group: str = CONSUMER_GROUP) -> tuple[str | None, int]:
    """Return the oldest pending entry's id over every shard (None: nothing pending) and the dead letters' count."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.xpending(keys.stream(shard), group)
        pipe.xlen(keys.dead_letters(shard))
    replies = pipe.execute(raise_on_error=False)
    oldest, dead = None, 0
    for summary, dead_letters in zip(replies[::2], replies[1::2], strict=True):
        if isinstance(dead_letters, Exception):
            raise dead_letters
        dead += int(dead_letters)
        has_pending = isinstance(summary, dict) and summary.get("pending") and summary.get("min")
        if has_pending and (oldest is None or entry_id_millis(summary["min"]) < entry_id_millis(oldest)):
            oldest = summary["min"]
    return oldest, dead


def oldest_unwritten_millis(client: redis.Redis, keys: KeySpace = SINGLE, group: str = CONSUMER_GROUP) -> int | None:
    """Return when (Unix ms) the oldest entry not yet written to Postgres was added, over every shard; None if none.

    That is the older of each shard's oldest pending entry and its first entry the group has not
    delivered yet (after its last-delivered id). Two round trips at most.
    """
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.xinfo_groups(keys.stream(shard))
        pipe.xpending(keys.stream(shard), group)
    replies = pipe.execute(raise_on_error=False)
    oldest: int | None = None
    undelivered_after: dict[int, str] = {}
    for shard, (groups, summary) in enumerate(zip(replies[::2], replies[1::2], strict=True)):
        if not isinstance(groups, list):  # no stream yet: nothing to write
            continue
        ours = [info for info in map(_decoded, groups) if info.get("name") in (group, group.encode())]
        if not ours:  # no group yet: every entry is undelivered
            undelivered_after[shard] = "0-0"
        elif ours[0].get("lag") is None or ours[0].get("lag"):
            last = ours[0].get("last-delivered-id")
            undelivered_after[shard] = last.decode() if isinstance(last, bytes) else str(last)
        if isinstance(summary, dict) and summary.get("pending") and summary.get("min"):
            millis = entry_id_millis(summary["min"])
            oldest = millis if oldest is None else min(oldest, millis)
    if undelivered_after:
        pipe = client.pipeline(transaction=False)
        for shard, last in undelivered_after.items():
            pipe.xrange(keys.stream(shard), min=f"({last}", count=1)
        for entries in pipe.execute(raise_on_error=False):
            if isinstance(entries, list) and entries:
                millis = entry_id_millis(entries[0][0])
                oldest = millis if oldest is None else min(oldest, millis)
    return oldest


def entry_id_millis(entry_id: str | bytes) -> int:
    """Return the time (Unix ms) encoded in a stream entry id: when Redis added the entry."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return int(entry_id.split("-", 1)[0])

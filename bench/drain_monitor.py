"""Watch the consumer group to time the drain without touching the engine's code.

A stream entry id starts with the Redis clock in milliseconds when XADD ran, i.e. when the reading
was accepted. The drain acknowledges an entry only after its rows committed, so an entry is
committed no later than the first moment it is below every pending entry and not after the
group's last-delivered id. Polling that bound every few milliseconds gives each entry's commit time
(to within one poll, always late rather than early) and so its lag, accepted -> committed.
"""

from __future__ import annotations

import contextlib
import threading
import time

import redis

from common.streams import CONSUMER_GROUP, SINGLE, KeySpace


def parse_id(entry_id: str) -> tuple[int, int]:
    """Return a stream id as a comparable (milliseconds, sequence) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def group_state(client: redis.Redis, stream: str = SINGLE.stream(0)) -> dict:
    """Return a shard's drain group's pending count, lag, last-delivered id and the stream's last id.

    All read in one MULTI (one shard's keys: one cluster slot), so they describe the same instant.
    """
    pipe = client.pipeline(transaction=True)
    pipe.exists(stream)
    pipe.xinfo_groups(stream)
    pipe.xinfo_stream(stream)
    try:
        _exists, groups, stream = pipe.execute()
    except redis.ResponseError:  # no stream yet
        return {"pending": 0, "lag": 0, "last_delivered": "0-0", "last_generated": "0-0", "length": 0}
    group = next((g for g in groups if _s(g["name"]) == CONSUMER_GROUP), None)
    length = int(stream["length"])
    last_generated = _s(stream["last-generated-id"])
    if group is None:
        return {"pending": 0, "lag": length, "last_delivered": "0-0", "last_generated": last_generated,
                "length": length}
    lag = group.get("lag")
    return {"pending": int(group["pending"]), "lag": None if lag is None else int(lag),
            "last_delivered": _s(group["last-delivered-id"]), "last_generated": last_generated, "length": length}


LAG_MISREPORTS: list[dict] = []


def undrained(client: redis.Redis, keys: KeySpace = SINGLE) -> int:
    """Return how many entries of every shard are not yet committed (pending + never delivered)."""
    return sum(_undrained(client, stream) for stream in keys.all_streams())


def _undrained(client: redis.Redis, stream: str) -> int:
    """Return how many entries of one stream are not yet committed (pending + never delivered).

    XINFO GROUPS' lag is not trusted alone: it can be unknown (nil), and it is cross-checked with the
    stream's last id: nothing is left to deliver only when the group has delivered that id
    (entries are never removed before delivery: the trim job removes acknowledged ones only).
    """
    state = group_state(client, stream)
    undelivered_exists = parse_id(state["last_generated"]) > parse_id(state["last_delivered"])
    lag = state["lag"]
    if lag is None:
        lag = state["length"] if undelivered_exists else 0
    elif lag == 0 and undelivered_exists:
        LAG_MISREPORTS.append(state)
        lag = 1
    return state["pending"] + lag


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LagMonitor:
    """Record accepted entries and the committed bound of every shard over time; compute each entry's lag."""

    def __init__(self, client: redis.Redis, interval: float = 0.005, keys: KeySpace = SINGLE):
        self.client = client
        self.interval = interval
        self.streams = keys.all_streams()
        self.entries: list[list[tuple[int, int]]] = [[] for _ in self.streams]  # per shard, ids added meanwhile
        self.bounds: list[list[tuple[float, tuple[int, int], bool]]] = [[] for _ in self.streams]
        self._last_seen = ["$"] * len(self.streams)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lag-monitor", daemon=True)

    def start(self) -> LagMonitor:
        """Start watching from the current end of every stream."""
        for i, stream in enumerate(self.streams):
            last = self.client.xinfo_stream(stream)["last-generated-id"] if self.client.exists(stream) else "0-0"
            self._last_seen[i] = _s(last)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i, stream in enumerate(self.streams):
            pipe.xrange(stream, f"({self._last_seen[i]}", "+", count=5000)
            pipe.xpending(stream, CONSUMER_GROUP)
            pipe.xinfo_groups(stream)
        replies = pipe.execute(raise_on_error=False)
        now = time.time()
        for i in range(len(self.streams)):
            new, pending, groups = replies[3 * i:3 * i + 3]
            if any(isinstance(reply, Exception) for reply in (new, pending, groups)):
                continue  # no stream or group yet
            for entry_id, _fields in new:
                self.entries[i].append(parse_id(_s(entry_id)))
            if new:
                self._last_seen[i] = _s(new[-1][0])
            group = next((g for g in groups if _s(g["name"]) == CONSUMER_GROUP), None)
            if group is None:
                continue
            if int(pending["pending"]) > 0:
                self.bounds[i].append((now, parse_id(_s(pending["min"])), False))
            else:
                self.bounds[i].append((now, parse_id(_s(group["last-delivered-id"])), True))

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(redis.RedisError):
                self._poll()
            self._stop.wait(self.interval)

    def lags(self) -> tuple[list[float], int]:
        """Return the lag in seconds of every entry seen committed, and how many were never seen committed."""
        lags: list[float] = []
        missing = 0
        for entries, bounds in zip(self.entries, self.bounds, strict=True):
            # The bound only moves forward; walk the entries in id order alongside it.
            j = 0
            for entry in sorted(entries):
                while j < len(bounds) and not _committed(entry, bounds[j]):
                    j += 1
                if j == len(bounds):
                    missing += 1
                    continue
                lags.append(max(0.0, bounds[j][0] - entry[0] / 1000.0))
        return lags, missing


def _committed(entry: tuple[int, int], bound: tuple[float, tuple[int, int], bool]) -> bool:
    _t, limit, inclusive = bound
    return entry <= limit if inclusive else entry < limit


def percentile(values: list[float], q: float) -> float | None:
    """Return the ``q``-th percentile (nearest rank) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


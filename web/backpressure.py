"""Backpressure: refuse ingest (503 + Retry-After) while the drain or the trim is too far behind, or Redis is full.

The check costs one Redis round trip per web process every BACKPRESSURE_CHECK_MS (default
250 ms); requests in between reuse the last answer. Ingest recovers by itself: once the backlog
or memory falls under its limit, the next check lets requests through again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from flask import Flask

from common.metrics import StreamLoad, read_stream_load
from common.settings import Settings
from common.streams import KeySpace
from web.errors import ApiError, error_response


@dataclass(frozen=True)
class Overload:
    """Why ingest is refused right now."""

    reason: str  # "backlog", "stream_length" or "redis_memory"
    message: str
    detail: dict


class OverloadedError(ApiError):
    """Ingest refused by backpressure: a 503 whose answer carries ``Retry-After``."""

    def __init__(self, overload: Overload, retry_after: int):
        super().__init__(503, "overloaded", overload.message, reason=overload.reason, retryAfter=retry_after,
                         **overload.detail)
        self.retry_after = retry_after


class BackpressureGate:
    """Decide, at most once per check interval per process, whether ingest must be refused."""

    def __init__(
        self,
        client_getter: Callable[[], redis.Redis],
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        keys: KeySpace | None = None,
    ):
        self._client_getter = client_getter
        self.keys = keys or KeySpace.for_settings(settings)
        self.settings = settings
        self._clock = clock
        self._interval = settings.backpressure_check_ms / 1000
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._overload: Overload | None = None
        self.last_load: StreamLoad | None = None

    def overload(self) -> Overload | None:
        """Return why ingest is refused, or None; reads Redis only when the cached answer is stale."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._interval:
            return self._overload
        with self._lock:
            if self._checked_at is None or self._clock() - self._checked_at >= self._interval:
                load = read_stream_load(self._client_getter(), self.keys)
                self.last_load = load
                self._overload = self.judge(load)
                self._checked_at = self._clock()
            return self._overload

    def judge(self, load: StreamLoad) -> Overload | None:
        """Return the overload that ``load`` amounts to, if any."""
        limit = self.settings.backlog_limit
        if load.backlog > limit:
            return Overload(
                "backlog",
                f"Ingestion is paused: {load.backlog} stream entries wait to be written (limit {limit}); "
                "retry shortly.",
                {"backlog": load.backlog, "limit": limit},
            )
        length_limit = self.settings.stream_length_limit
        if load.length > length_limit:
            return Overload(
                "stream_length",
                f"Ingestion is paused: the stream holds {load.length} entries (limit {length_limit}), "
                "acknowledged ones waiting for the trim job; retry shortly.",
                {"streamLength": load.length, "limit": length_limit},
            )
        ratio = self.settings.redis_memory_limit_ratio
        if load.maxmemory and load.used_memory >= ratio * load.maxmemory:
            return Overload(
                "redis_memory",
                "Ingestion is paused: Redis memory is nearly full; retry shortly.",
                {"usedMemory": load.used_memory, "maxMemory": load.maxmemory, "limitRatio": ratio},
            )
        return None

    def check(self) -> None:
        """Raise a 503 ``ApiError`` with ``Retry-After`` when ingest must be refused."""
        overload = self.overload()
        if overload is not None:
            raise OverloadedError(overload, self.settings.backpressure_retry_after_seconds)


def init_app(app: Flask) -> None:
    """Give the app its gate and answer ``OverloadedError`` with a ``Retry-After`` header."""
    settings = app.config["SETTINGS"]
    app.extensions["backpressure"] = BackpressureGate(lambda: app.extensions["redis"], settings,
                                                      keys=app.extensions["redis_keys"])

    @app.errorhandler(OverloadedError)
    def _overloaded(exc: OverloadedError):
        return error_response(exc.status, exc.error, exc.message, headers={"Retry-After": str(exc.retry_after)},
                              **exc.extra)

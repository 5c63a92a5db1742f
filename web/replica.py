"""Whether the API's reads may go to the streaming replica: its lag, measured in the background.

One monitor per web process (web/db.py keeps them). A daemon thread asks the primary for its WAL
position and the replica how far it has replayed, every REPLICA_CHECK_SECONDS; requests only read
the last answer, so a dead or slow replica never stalls them. A failed check, or a request that
found the replica broken (``mark_down``), keeps reads on the primary for REPLICA_RETRY_SECONDS
(a circuit breaker): the replica is tried again by the monitor, not by every request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from common.database import load_sql

log = logging.getLogger(__name__)


def lsn_to_int(lsn: str | None) -> int | None:
    """Turn a ``pg_lsn`` text such as ``16/B374D848`` into a comparable integer."""
    if lsn is None:
        return None
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def replay_lag(primary_lsn: int | None, replay_lsn: int | None, receive_lsn: int | None,
               seconds_since_replay: float | None) -> float:
    """Return the replica's lag in seconds: 0 when it has replayed everything, else the age of its last replay.

    A replica that replayed up to the primary's position (or, without the primary's, all it received)
    is current however old its last transaction is; one that is behind is as stale as the last
    transaction it replayed (infinite when it replayed none since it started).
    """
    if replay_lsn is None:
        return math.inf
    target = primary_lsn if primary_lsn is not None else receive_lsn
    if target is None or replay_lsn >= target:
        return 0.0
    return max(0.0, seconds_since_replay) if seconds_since_replay is not None else math.inf


@dataclass(frozen=True)
class ReplicaState:
    """The last check's answer: did the replica answer as a standby, and how far behind it was."""

    up: bool = False
    lag_seconds: float | None = None
    error: str | None = "not checked yet"
    checked_at: float | None = None  # time.time() of the check


class ReplicaMonitor:
    """Measure the replica's lag in a background thread; say whether reads may go there now."""

    def __init__(self, primary: ConnectionPool, replica: ConnectionPool, max_lag_seconds: float,
                 check_seconds: float, retry_seconds: float):
        self.primary = primary
        self.replica = replica
        self.max_lag_seconds = max_lag_seconds
        self.check_seconds = check_seconds
        self.retry_seconds = retry_seconds
        self.state = ReplicaState()
        self._down_until = 0.0  # time.monotonic() before which reads stay on the primary
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by mark_down: check again after the retry interval
        self._thread = threading.Thread(target=self._run, name="replica-monitor", daemon=True)
        self._thread.start()

    def usable(self) -> bool:
        """Tell whether reads may go to the replica now (no I/O: the last check's answer)."""
        state = self.state
        return (state.up and state.lag_seconds is not None and state.lag_seconds <= self.max_lag_seconds
                and time.monotonic() >= self._down_until)

    def mark_down(self, error: str) -> None:
        """Keep reads on the primary for REPLICA_RETRY_SECONDS: a request found the replica broken."""
        self._down_until = time.monotonic() + self.retry_seconds
        self.state = ReplicaState(False, self.state.lag_seconds, error[:300], self.state.checked_at)
        self._wake.set()
        log.warning("replica unusable, reads go to the primary", extra={"error": error[:300],
                                                                        "retry_seconds": self.retry_seconds})

    def check(self) -> ReplicaState:
        """Ask both servers once and record the answer (the thread calls it; tests may too)."""
        primary_lsn = None
        try:
            with self.primary.connection(timeout=self.check_seconds + 2) as conn:
                primary_lsn = lsn_to_int(conn.execute(load_sql("replica/primary_position")).fetchone()[0])
        except psycopg.Error as exc:  # the primary's trouble is not the replica's: use what it received
            log.debug("replica check: primary position unavailable", extra={"error": str(exc).strip()})
        try:
            row = self._replay_position()
            in_recovery, replay, receive, since_replay = row
        except psycopg.Error as exc:
            return self._failed(f"{type(exc).__name__}: {str(exc).strip()}")
        if not in_recovery:
            # A promoted or unrelated server no longer follows the primary: its answers may never catch up.
            return self._failed("the replica is not in recovery (promoted, or not a standby of DATABASE_URL)")
        lag = replay_lag(primary_lsn, lsn_to_int(replay), lsn_to_int(receive), since_replay)
        was_usable = self.usable()
        self.state = ReplicaState(True, lag, None, time.time())
        if was_usable != self.usable():
            log.info("replica reads " + ("resumed" if self.usable() else "paused: lag above REPLICA_MAX_LAG_SECONDS"),
                     extra={"lag_seconds": lag, "max_lag_seconds": self.max_lag_seconds})
        return self.state

    def _replay_position(self) -> tuple:
        """Ask the replica how far it has replayed: through the pool while it answers, else directly.

        A pool whose connections failed waits out its own reconnection backoff (growing to many
        seconds) before it tries again; a replica back from a restart is found by the check's own
        connection, retried every REPLICA_RETRY_SECONDS.
        """
        if self.state.up:
            with self.replica.connection(timeout=min(self.check_seconds, self.retry_seconds) + 2) as conn:
                return conn.execute(load_sql("replica/replay_position")).fetchone()
        kwargs = {**self.replica.kwargs, "connect_timeout": max(1, math.ceil(self.retry_seconds)) + 2}
        with psycopg.connect(self.replica.conninfo, **kwargs) as conn:
            return conn.execute(load_sql("replica/replay_position")).fetchone()

    def _failed(self, error: str) -> ReplicaState:
        if self.state.up or self.state.checked_at is None:
            log.warning("replica check failed, reads go to the primary", extra={"error": error[:300]})
        self._down_until = time.monotonic() + self.retry_seconds
        self.state = ReplicaState(False, None, error[:300], time.time())
        return self.state

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                state = self.check()
            except Exception:  # the monitor must outlive any surprise; reads then stay on the primary
                log.exception("replica check crashed")
                state = self._failed("the replica check crashed (see the log)")
            self._wake.wait(self.check_seconds if state.up else self.retry_seconds)
            # Woken by mark_down (or after a failure): the replica is tried again once the interval passed.
            self._stop.wait(max(0.0, self._down_until - time.monotonic()))

    def stop(self) -> None:
        """End the background thread (tests and shutdown)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.check_seconds + self.retry_seconds + 5)

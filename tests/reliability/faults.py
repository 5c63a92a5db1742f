"""Inject the production faults into a running stack and count them by type."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import redis
from rq import Worker

from common.streams import CONSUMER_GROUP
from tests.processes import descendants
from tests.reliability.processes import ManagedProcess, signal_pids
from tests.reliability.servers import PrivatePostgres, PrivateRedis
from tests.reliability.stack import Stack

log = logging.getLogger(__name__)


@dataclass
class FaultLog:
    """What was injected, when (seconds since the run started) and how long each took to clear."""

    events: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    last_cleared: float | None = None

    def record(self, kind: str, started: float, cleared: float, **detail) -> None:
        self.counts[kind] += 1
        self.last_cleared = cleared
        self.events.append({"fault": kind, "at": round(started, 2), "cleared_after": round(cleared - started, 2),
                            **detail})


class FaultInjector:
    """Each method injects one fault and returns when the component is back (or replaced)."""

    def __init__(self, stack: Stack, pg: PrivatePostgres, redis_server: PrivateRedis, t0: float):
        self.stack = stack
        self.pg = pg
        self.redis_server = redis_server
        self.t0 = t0
        self.log = FaultLog()
        self._pg_stopped_at: float | None = None
        self._pg_mode = ""

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _workers_by_consumer(self, raw: redis.Redis) -> dict[str, tuple[ManagedProcess, list[int]]]:
        """Map each live RQ worker's name (its consumer name) to its process and its pids, work horse first."""
        live = {p.pid: p for p in self.stack.processes.live("worker")}
        return {w.name: (live[w.pid], [*reversed(descendants(w.pid)), w.pid])
                for w in Worker.all(connection=raw) if w.pid in live}

    def kill_worker_mid_batch(self, attempts: int = 3, timeout: float = 15.0) -> dict:
        """SIGKILL a worker and its work horse while it holds read-but-unacknowledged entries; start another.

        "Mid batch" is proven afterwards: the dead consumer still owns pending entries. A batch
        can be acknowledged between the look and the kill; then another worker is tried, up to
        ``attempts`` kills. Every kill is counted, by whether it caught a batch.
        """
        for _ in range(attempts):
            if self._kill_one_worker(timeout):
                return {"mid_batch": True}
        return {"mid_batch": False}

    def _kill_one_worker(self, timeout: float) -> bool:
        started = self._now()
        data = self.stack.redis()
        raw = redis.Redis(host="127.0.0.1", port=self.redis_server.port, db=self.stack.redis_db, socket_timeout=5)
        deadline = time.monotonic() + timeout
        workers: dict[str, tuple[ManagedProcess, list[int]]] = {}
        looked_at = 0.0
        victim = None
        try:
            while time.monotonic() < deadline and victim is None:
                if time.monotonic() - looked_at > 0.3:  # the work horse changes with every job
                    workers, looked_at = self._workers_by_consumer(raw), time.monotonic()
                consumers = self._consumers(data)
                victim = next((c["name"] for c in consumers if c["pending"] > 0 and c["name"] in workers), None)
                if victim is None:
                    time.sleep(0.001)
            if victim is None:  # no batch in flight within the timeout: kill any worker
                process = self.stack.processes.live("worker")[0]
                victim = next((n for n, (p, _) in workers.items() if p is process), f"pid {process.pid}")
            else:
                process, pids = workers[victim]
                signal_pids(pids, signal.SIGKILL)  # at once: looking the tree up again takes too long
            self.stack.processes.kill_tree(process)
            pending_left = sum(int(c["pending"]) for c in self._consumers(data) if c["name"] == victim)
            self.stack.processes.start("worker")
        finally:
            data.close()
            raw.close()
        kind = "worker SIGKILL mid-batch" if pending_left else "worker SIGKILL between batches"
        self.log.record(kind, started, self._now(), consumer=victim, pending_left=pending_left)
        return pending_left > 0

    def _consumers(self, data) -> list[dict]:
        """Return the consumers of every shard's group (a consumer appears once per shard it read)."""
        consumers = []
        for stream in self.stack.keys.all_streams():
            with contextlib.suppress(redis.ResponseError):  # no stream or group yet
                consumers += data.xinfo_consumers(stream, CONSUMER_GROUP)
        return consumers

    def stop_postgres(self, mode: str) -> None:
        """Stop the PostgreSQL cluster (``immediate`` is a crash, ``fast`` a clean shutdown)."""
        self.pg.stop(mode)
        self._pg_stopped_at = self._now()
        self._pg_mode = mode

    def start_postgres(self) -> None:
        """Start the cluster again after ``stop_postgres``."""
        stopped_at = self._pg_stopped_at if self._pg_stopped_at is not None else self._now()
        down_for = self._now() - stopped_at
        self.pg.start()
        self.log.record("postgres stop >= 10 s", stopped_at, self._now(), mode=self._pg_mode,
                        down_seconds=round(down_for, 1))
        self._pg_stopped_at = None

    def restart_redis(self) -> None:
        """SIGTERM redis-server and start it on the same data directory (its AOF)."""
        started = self._now()
        self.redis_server.restart()
        self.log.record("redis restart (SIGTERM)", started, self._now())

    def restart_web(self) -> None:
        """SIGTERM gunicorn (graceful: in-flight requests finish), start it again, wait until it answers."""
        started = self._now()
        for process in self.stack.processes.live("web"):
            self.stack.processes.terminate(process)
        self.stack.processes.start("web")
        self.stack.wait_web()
        self.log.record("web SIGTERM + restart", started, self._now())

"""The worker process: ``python -m workers.worker`` runs an RQ worker (DrainWorker) that outlives Redis outages.

``rq worker`` on its own exits when Redis is unreachable at start, and quits its loop when a Redis
call fails outside the blocking dequeue (a timeout, a heartbeat, a job's bookkeeping). Under
honcho one exiting process stops them all; under docker it is a crash loop. Here a worker that
lost Redis waits (with backoff) until Redis answers and starts a fresh RQ worker; its unfinished
stream entries stay pending and are reclaimed, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

import redis
from rq.worker import HerokuWorker

from common.logging import configure_logging, rq_log_level
from common.redis_clients import rq_client
from common.settings import Settings
from workers.drain import STOP
from workers.drain_slots import DRAIN_QUEUE, MAINTENANCE_QUEUE

log = logging.getLogger("workers.worker")

QUEUES = (MAINTENANCE_QUEUE, DRAIN_QUEUE)
_MAX_BACKOFF_SECONDS = 30.0


class DrainWorker(HerokuWorker):
    """On SIGTERM (a dyno restart, ``docker stop``) let the drain commit and acknowledge its batch.

    HerokuWorker forwards SIGTERM to the work horse as SIGRTMIN and kills the job
    ``imminent_shutdown_delay`` seconds later. The drain loop checks ``STOP`` between batches, so
    it returns cleanly well within that delay; anything cut short stays pending and is reclaimed.
    """

    imminent_shutdown_delay = 8
    # RQ retries a lost connection while waiting for jobs with backoff up to this many seconds
    # (60 by default): keep the wait short so that the drain resumes soon after Redis is back.
    max_connection_wait_time = 5.0

    def request_stop_sigrtmin(self, signum, frame):
        """Ask the running drain to stop after its batch, then fall back to HerokuWorker's deadline."""
        STOP.set()
        signal.signal(signal.SIGRTMIN, self.request_force_stop_sigrtmin)
        signal.signal(signal.SIGALRM, self.request_force_stop_sigrtmin)
        signal.alarm(self.imminent_shutdown_delay)

    @property
    def shutdown_was_requested(self) -> bool:
        """Tell whether SIGTERM/SIGINT asked this worker to stop (as opposed to losing Redis)."""
        return self._shutdown_requested_date is not None or self._stop_requested


def redis_answers(connection: redis.Redis) -> bool:
    """Tell whether Redis answers PING (and has finished loading its data)."""
    try:
        return bool(connection.ping())
    except (redis.RedisError, OSError):
        return False


def run(settings: Settings, queues: tuple[str, ...], stop: threading.Event, burst: bool = False) -> int:
    """Run RQ workers one after another until a shutdown is asked; return the process exit code."""
    backoff = 1.0
    while not stop.is_set():
        connection = rq_client(settings)
        if not redis_answers(connection):
            log.warning("redis unavailable; worker waits", extra={"retry_in_seconds": backoff})
            stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            continue
        backoff = 1.0
        worker = DrainWorker(list(queues), connection=connection)
        # RQ installs its own SIGTERM/SIGINT handlers in work(); between workers ours apply.
        try:
            worker.work(burst=burst, logging_level=rq_log_level(settings))
        except redis.RedisError as exc:  # raised by RQ's teardown when Redis is gone
            log.warning("rq worker lost redis", extra={"worker": worker.name, "error": str(exc)})
        finally:
            with contextlib.suppress(Exception):
                worker.unsubscribe()
            _install_stop_handlers(stop)
        if worker.shutdown_was_requested or burst:
            break
        _wait_for_orphaned_horse(worker, settings.drain_job_seconds + 30, stop)
        log.warning("rq worker left its loop without a shutdown request; starting a new one",
                    extra={"worker": worker.name, "retry_in_seconds": backoff})
        stop.wait(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
    log.info("worker stopped")
    return 0


def _wait_for_orphaned_horse(worker: DrainWorker, seconds: float, stop: threading.Event) -> None:
    """Let a job that RQ left running finish (a drain ends by its own deadline), then reap it.

    Its entries are safe either way: whatever it did not acknowledge stays pending and is reclaimed.
    """
    pid = worker.horse_pid
    if not pid:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # already reaped
        if done:
            return
        if stop.wait(0.2):
            break
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _install_stop_handlers(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def main(argv: list[str] | None = None) -> int:
    """Run the worker on the given queues (default: maintenance, drain) until SIGTERM."""
    args = list(sys.argv[1:] if argv is None else argv)
    burst = "--burst" in args
    queues = tuple(a for a in args if not a.startswith("--")) or QUEUES
    settings = Settings.from_env()
    configure_logging("worker", settings)
    stop = threading.Event()
    _install_stop_handlers(stop)
    return run(settings, queues, stop, burst=burst)


if __name__ == "__main__":
    raise SystemExit(main())

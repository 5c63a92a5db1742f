"""The scheduler process: ``python -m scheduler`` runs the jobs of scheduler/cron_config.py.

It is RQ's ``CronScheduler`` in a loop that outlives Redis outages: ``rq cron`` exits with a
traceback as soon as Redis stops answering (and, under honcho, takes ``make run`` down with it);
this loop logs, waits with backoff and carries on when Redis is back. Run exactly one.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

import redis
from rq.cron import CronScheduler

from common.logging import configure_logging
from common.redis_clients import data_client, rq_client
from common.settings import Settings
from common.streams import KeySpace
from scheduler.summary import IngestSummary

log = logging.getLogger("scheduler")

CONFIG_MODULE = "scheduler.cron_config"
_MAX_BACKOFF_SECONDS = 30.0


def build_scheduler(connection: redis.Redis) -> CronScheduler:
    """Return a CronScheduler with every job of the cron configuration registered."""
    scheduler = CronScheduler(connection=connection)
    scheduler.load_config_from_file(CONFIG_MODULE)
    return scheduler


def run(scheduler: CronScheduler, stop: threading.Event, summary: IngestSummary | None = None) -> None:
    """Enqueue due jobs (and log the ingest summary) until ``stop`` is set; while Redis is unreachable, retry."""
    backoff = 1.0
    registered = False
    while not stop.is_set():
        try:
            if not registered:
                scheduler.register_birth()
                registered = True
                log.info("scheduler started", extra={"scheduler": scheduler.name,
                                                     "jobs": [j.name for j in scheduler.get_jobs()]})
            if scheduler.enqueue_jobs():
                scheduler.save()
            scheduler.heartbeat()
            if summary is not None:
                summary.tick()
            if backoff > 1.0:
                log.info("redis is back; scheduling resumes")
            backoff = 1.0
            stop.wait(scheduler.calculate_sleep_interval())
        except redis.RedisError as exc:
            # A job enqueued just before the error may be enqueued again: every job is idempotent.
            log.warning("redis unavailable; scheduler waits", extra={"retry_in_seconds": backoff, "error": str(exc)})
            stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
    with contextlib.suppress(redis.RedisError):
        scheduler.register_death()
    log.info("scheduler stopped", extra={"scheduler": scheduler.name})


def main() -> int:
    """Run the scheduler until SIGTERM or SIGINT."""
    settings = Settings.from_env()
    configure_logging("scheduler", settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    connection = rq_client(settings)
    # The summary reads the metrics where they live: the data Redis (a cluster, with REDIS_CLUSTER_URL).
    summary = IngestSummary(data_client(settings), settings.log_summary_seconds, KeySpace.for_settings(settings))
    run(build_scheduler(connection), stop, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

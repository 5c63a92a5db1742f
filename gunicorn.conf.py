"""Gunicorn settings for the web process, from the environment (PORT, WEB_CONCURRENCY, WEB_THREADS, LOG_FORMAT)."""

import contextlib
import gc
import logging
import multiprocessing
import os

from gunicorn.glogging import Logger

from common.logging import skip_unused_record_fields

skip_unused_record_fields()

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
# Threaded workers keep HTTP connections alive between requests (the sync worker closes each one):
# a dashboard or device that reuses its connection skips the TCP handshake, which on this
# machine was most of a latest-state read (p50 1.3 -> 0.9 ms for an empty GET, bench/README.md).
# The GIL is released while a thread waits for Redis or Postgres, so a few threads a process
# also overlap those waits.
worker_class = os.environ.get("WEB_WORKER_CLASS", "gthread")
threads = int(os.environ.get("WEB_THREADS", "4"))
# Requests are short (one Redis round trip); a stuck one is killed after this many seconds.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# On SIGTERM, gunicorn stops accepting and in-flight requests get this long to finish.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# GET /v1/vehicles/latest?ids=... takes up to 1,000 ids of up to 64 characters (~65 KB of request
# line); gunicorn caps the line at 8190 bytes unless the limit is 0 (none). Bodies stay capped by
# MAX_REQUEST_BYTES in the app.
limit_request_line = 0
# The app logs one JSON line per request itself (web/request_log.py): no access log.
accesslog = None
errorlog = "-"
# Gunicorn 27's control socket defaults to one fixed path per user, which two servers on one
# machine (tests, a benchmark beside `make run`) would fight over; nothing here uses it.
control_socket_disable = True

# Gunicorn's own lines (boot, worker exits, timeouts) and the app's go to stdout, as JSON lines
# like every other process (LOG_FORMAT=text for plain text).
_formatter = (
    {"()": "common.logging.JsonFormatter", "process": "web"}
    if os.environ.get("LOG_FORMAT", "json").lower() == "json"
    else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
)
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"main": _formatter},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stdout"}},
    "root": {"level": os.environ.get("LOG_LEVEL", "INFO").upper(), "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        # web/request_log.py writes the request lines (with the request id); no second access line.
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
    },
}


class AccessLogOffLogger(Logger):
    """gunicorn's logger, minus the access line's work when the access logger would drop the line.

    With ``logconfig_dict`` set, gunicorn builds every request's access-log fields (a dict of
    every header and environ key, a formatted date) before the level check drops the line: ~5% of
    a web worker's CPU on a small request, for nothing.
    """

    def access(self, resp, req, environ, request_time):
        """Log the access line only if the ``gunicorn.access`` logger takes INFO."""
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


logger_class = AccessLogOffLogger


def post_worker_init(worker):
    """Flush this worker's metric counters every second; take the loaded app out of the GC's sight."""
    buffer = worker.wsgi.extensions.get("metrics_buffer") if hasattr(worker.wsgi, "extensions") else None
    if buffer is not None:
        buffer.start_flusher(interval=1.0)
    # Everything loaded so far (Flask, marshmallow, psycopg, redis-py, the app) lives as long as the
    # process: freezing it keeps the collector's full passes from walking those objects again and
    # again, each such pass being a pause of a few ms in the middle of some request.
    gc.freeze()


def worker_exit(server, worker):
    """Flush the last counts of a worker that is stopping."""
    app = getattr(worker, "wsgi", None)
    buffer = app.extensions.get("metrics_buffer") if hasattr(app, "extensions") else None
    if buffer is not None:
        with contextlib.suppress(Exception):
            buffer.flush()

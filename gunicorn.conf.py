"""Gunicorn settings for the web process, from common/settings.py (WEB_HOST, PORT, WEB_*, LOG_FORMAT, LOG_LEVEL)."""

import contextlib
import gc
import logging

from gunicorn.glogging import Logger

from common.logging import skip_unused_record_fields
from common.settings import Settings
from web.gunicorn_errors import install_json_errors

skip_unused_record_fields()
install_json_errors()

_settings = Settings.from_env()
# Loopback unless WEB_HOST says otherwise (compose and the image say 0.0.0.0; Heroku's DYNO implies it).
bind = f"{_settings.web_host}:{_settings.port}"
workers = _settings.web_concurrency
# Threaded workers keep HTTP connections alive between requests (the sync worker closes each one):
# a dashboard or device that reuses its connection skips the TCP handshake, which on this
# machine was most of a latest-state read (p50 1.3 -> 0.9 ms for an empty GET, bench/README.md).
# The GIL is released while a thread waits for Redis or Postgres, so a few threads a process
# also overlap those waits.
worker_class = _settings.web_worker_class
threads = _settings.web_threads
# Requests are short (one Redis round trip); a stuck one is killed after this many seconds.
timeout = _settings.web_timeout
# On SIGTERM, gunicorn stops accepting and in-flight requests get this long to finish.
graceful_timeout = _settings.web_graceful_timeout
keepalive = 5
# Bounded request heads. gunicorn's pure-Python parser costs the square of a line's length, so the
# line keeps gunicorn's largest finite limit (8190 bytes; no limit let one 16 MB line hold a worker
# for 22 s). A 1,000-id multi-read does not fit a URL that long: it is a POST with the ids in the
# body (POST /v1/vehicles/latest); the GET form takes what fits. Devices send about ten headers:
# 40 leaves room for proxies and tracing; one field may hold 8190 bytes (a bearer key is ~50).
# Bodies stay capped by MAX_REQUEST_BYTES in the app (and by nginx in front of it).
limit_request_line = 8190
limit_request_fields = 40
limit_request_field_size = 8190
# The app logs each failed request itself (web/request_log.py): no access log.
accesslog = None
errorlog = "-"
# Gunicorn 27's control socket defaults to one fixed path per user, which two servers on one
# machine (tests, a benchmark beside `make run`) would fight over; nothing here uses it.
control_socket_disable = True

# Gunicorn's own lines (boot, worker exits, timeouts) and the app's go to stdout, as JSON lines
# like every other process, or readable text (LOG_FORMAT: auto, json, text).
_formatter_class = "JsonFormatter" if _settings.resolved_log_format() == "json" else "TextFormatter"
_formatter = {"()": f"common.logging.{_formatter_class}", "process": "web"}
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"main": _formatter},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stdout"}},
    "root": {"level": _settings.log_level, "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": _settings.log_level, "handlers": ["stdout"], "propagate": False},
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

"""A log line for every HTTP request that failed (4xx/5xx): request id, method, route, status, duration.

Successful requests are not logged one by one (under `make run` every line passes through honcho,
which cost a third of single-reading ingest); the scheduler logs a periodic ingest summary instead
(scheduler/summary.py), and LOG_LEVEL=DEBUG logs every request. The request id comes from the
caller's ``X-Request-ID`` header when it is a sane token, else a new one is made; it is echoed in
the response header so a client can quote it.
"""

from __future__ import annotations

import logging
import os
import re
import time

from flask import Flask, Response, request

# INFO: one line per 4xx/5xx (LOG_LEVEL=WARNING silences them); DEBUG: one line per request.
log = logging.getLogger("web.request")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Kept in the WSGI environ rather than flask.g: one proxy lookup instead of several, on every request.
_ID_KEY = "energy.request_id"
_STARTED_KEY = "energy.request_started"


def _start() -> None:
    environ = request.environ
    given = environ.get("HTTP_X_REQUEST_ID")
    environ[_ID_KEY] = given if given and _REQUEST_ID.match(given) else os.urandom(12).hex()  # cheaper than uuid4
    environ[_STARTED_KEY] = time.perf_counter()


def _finish(response: Response) -> Response:
    environ = request.environ
    request_id = environ.get(_ID_KEY) or os.urandom(12).hex()
    response.headers["X-Request-ID"] = request_id
    status = response.status_code
    level = logging.INFO if status >= 400 else logging.DEBUG
    if log.isEnabledFor(level):
        started = environ.get(_STARTED_KEY)
        rule = request.url_rule
        length = environ.get("CONTENT_LENGTH")
        log.log(
            level,
            "request",
            extra={
                "request_id": request_id,
                "method": environ.get("REQUEST_METHOD"),
                "route": rule.rule if rule is not None else None,
                "path": request.path,
                "status": status,
                "key_id": environ.get("energy.key_id"),  # set by web/auth.py; never the token
                "duration_ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
                "bytes_in": int(length) if length and length.isdigit() else None,
            },
        )
    return response


def init_app(app: Flask) -> None:
    """Log the failed requests of ``app`` when they end (error handlers run first); give each an X-Request-ID."""
    app.before_request(_start)
    app.after_request(_finish)

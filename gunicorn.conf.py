"""Gunicorn settings for the web process, from the environment (PORT, WEB_CONCURRENCY)."""

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "sync"
# Requests are short (one Redis round trip); a stuck one is killed after this many seconds.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# On SIGTERM, in-flight requests get this long to finish.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
accesslog = None
errorlog = "-"
# Gunicorn 27's control socket defaults to one fixed path per user, which two servers on one
# machine (tests, a benchmark beside `make run`) would fight over; nothing here uses it.
control_socket_disable = True

"""Postgres for web requests: one psycopg_pool per process, created on first use (after gunicorn forks)."""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from flask import Flask, current_app
from psycopg_pool import ConnectionPool

# The pool's settings, from common/settings.py (same names there, lower case), overridable in app.config.
# A gunicorn worker serves WEB_THREADS (4) requests at a time, so one connection per thread is plenty;
# DB_POOL_TIMEOUT bounds how long a request waits before answering 503; a connection idle for longer
# than DB_POOL_CHECK_IDLE_SECONDS is checked with a round trip before it is lent out.
POOL_SETTINGS = (
    "DB_POOL_MIN_SIZE", "DB_POOL_MAX_SIZE", "DB_POOL_TIMEOUT", "DB_CONNECT_TIMEOUT", "DB_STATEMENT_TIMEOUT_MS",
    "DB_POOL_CHECK_IDLE_SECONDS",
)

# Pools are shared by every app of the process that points at the same database (tests build many
# apps; production builds one). The pid in the key means a forked child never uses its parent's pool.
_pools: dict[tuple, ConnectionPool] = {}
_pools_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """Give ``app`` the pool settings (DB_POOL_* and friends); the pool itself opens on the first request needing it."""
    settings = app.config["SETTINGS"]
    for name in POOL_SETTINGS:
        app.config.setdefault(name, getattr(settings, name.lower()))


def get_pool(app: Flask | None = None) -> ConnectionPool:
    """Return this process's pool for the app's database, opening it on first use."""
    app = app or current_app
    config = app.config
    conninfo = config["SETTINGS"].database_url
    key = (
        os.getpid(), conninfo, config["DB_POOL_MIN_SIZE"], config["DB_POOL_MAX_SIZE"],
        config["DB_POOL_TIMEOUT"], config["DB_CONNECT_TIMEOUT"], config["DB_STATEMENT_TIMEOUT_MS"],
        config["DB_POOL_CHECK_IDLE_SECONDS"],
    )
    pool = _pools.get(key)
    if pool is not None:
        return pool
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                conninfo,
                min_size=config["DB_POOL_MIN_SIZE"],
                max_size=config["DB_POOL_MAX_SIZE"],
                timeout=config["DB_POOL_TIMEOUT"],
                # Reads are single statements: autocommit saves the BEGIN/ROLLBACK round trips.
                kwargs={
                    "autocommit": True,
                    "connect_timeout": config["DB_CONNECT_TIMEOUT"],
                    "application_name": "energy-web",
                    # UTC sessions: timestamps come back in UTC, which the JSON answers write as they are.
                    "options": f"-c statement_timeout={int(config['DB_STATEMENT_TIMEOUT_MS'])} -c TimeZone=UTC",
                },
                # A connection broken by a Postgres restart is replaced instead of failing a request.
                check=functools.partial(_idle_check, idle_seconds=config["DB_POOL_CHECK_IDLE_SECONDS"]),
                name="web",
                open=False,
            )
            pool.open(wait=False)
            _pools[key] = pool
    return pool


class IdleCheck:
    """Check a connection with a round trip only if it sat unused for a while.

    Checking every connection the pool lends costs a round trip on every request (~20% of an
    analytics request here). A connection that answered a moment ago is all but certainly alive;
    one idle for longer may have been closed by a Postgres restart or an idle timeout. If Postgres
    went away in between, that one request answers 503 and the pool drops the broken connection.
    """

    def __init__(self):
        self.last_used: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: psycopg.Connection, idle_seconds: float) -> None:
        """Raise if ``conn`` is broken; only asks Postgres when ``conn`` was idle over ``idle_seconds``."""
        if time.monotonic() - self.last_used.get(conn, 0.0) > idle_seconds:
            ConnectionPool.check_connection(conn)

    def used(self, conn: psycopg.Connection) -> None:
        """Note that ``conn`` just worked."""
        self.last_used[conn] = time.monotonic()


_idle_check = IdleCheck()


@contextmanager
def connection(app: Flask | None = None) -> Iterator[psycopg.Connection]:
    """Lend a pooled connection for one request; ``PoolTimeout`` (an ``OperationalError``) means 503."""
    with get_pool(app).connection() as conn:
        try:
            yield conn
        finally:
            if not conn.broken:
                _idle_check.used(conn)


def close_pools() -> None:
    """Close every pool this process opened (tests and shutdown)."""
    with _pools_lock:
        pid = os.getpid()
        for key in [k for k in _pools if k[0] == pid]:
            _pools.pop(key).close()

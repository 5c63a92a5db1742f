"""Postgres for web requests: one psycopg_pool per process and server, created on first use (after gunicorn forks).

Reads that may be a moment stale go through read_connection()/run_read() (the replica when one is current).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from flask import Flask, current_app
from psycopg_pool import ConnectionPool

from web.replica import ReplicaMonitor

log = logging.getLogger(__name__)
T = TypeVar("T")

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
_monitors: dict[tuple, ReplicaMonitor] = {}
_pools_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """Give ``app`` the pool settings (DB_POOL_* and friends); the pool itself opens on the first request needing it."""
    settings = app.config["SETTINGS"]
    for name in POOL_SETTINGS:
        app.config.setdefault(name, getattr(settings, name.lower()))


def get_pool(app: Flask | None = None) -> ConnectionPool:
    """Return this process's pool for the app's database (the primary), opening it on first use."""
    app = app or current_app
    return _pool(app, app.config["SETTINGS"].database_url, "web")


def replica_pool(app: Flask | None = None) -> ConnectionPool | None:
    """Return this process's pool for DATABASE_REPLICA_URL, or None when no replica is configured."""
    app = app or current_app
    url = app.config["SETTINGS"].database_replica_url
    return _pool(app, url, "web-replica") if url else None


def _pool(app: Flask, conninfo: str, name: str) -> ConnectionPool:
    config = app.config
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
                    "application_name": f"energy-{name}",
                    # UTC sessions: timestamps come back in UTC, which the JSON answers write as they are.
                    "options": f"-c statement_timeout={int(config['DB_STATEMENT_TIMEOUT_MS'])} -c TimeZone=UTC",
                },
                # A connection broken by a Postgres restart is replaced instead of failing a request.
                check=functools.partial(_idle_check, idle_seconds=config["DB_POOL_CHECK_IDLE_SECONDS"]),
                name=name,
                open=False,
            )
            pool.open(wait=False)
            _pools[key] = pool
    return pool


def replica_monitor(app: Flask | None = None) -> ReplicaMonitor | None:
    """Return this process's replica monitor (its thread starts on first use), or None without a replica."""
    app = app or current_app
    replica = replica_pool(app)
    if replica is None:
        return None
    settings = app.config["SETTINGS"]
    key = (os.getpid(), id(get_pool(app)), id(replica), settings.replica_max_lag_seconds,
           settings.replica_check_seconds, settings.replica_retry_seconds)
    monitor = _monitors.get(key)
    if monitor is None:
        with _pools_lock:
            monitor = _monitors.get(key)
            if monitor is None:
                monitor = ReplicaMonitor(get_pool(app), replica, settings.replica_max_lag_seconds,
                                         settings.replica_check_seconds, settings.replica_retry_seconds)
                _monitors[key] = monitor
    return monitor


# -- which server a read goes to ----------------------------------------------------------------
# The rule (docs/deploying.md, "Reads on a streaming replica"): history, analytics, fleet, conflicts
# and the latest-state fallback call read_connection()/run_read() and go to the replica while it is
# current; mappings and keys (which a client reads right after writing them, and which decide who
# gets in) and every write use connection(), the primary.


def read_pool(app: Flask | None = None) -> ConnectionPool:
    """Return the pool a read-only API query should use now: the replica while it is current, else the primary."""
    app = app or current_app
    monitor = replica_monitor(app)
    if monitor is not None and monitor.usable():
        return replica_pool(app)
    return get_pool(app)


@contextmanager
def read_connection(app: Flask | None = None) -> Iterator[psycopg.Connection]:
    """Lend a connection for a read-only query: the replica's when it is current and lends one, else the primary's.

    A failure after the connection is lent is the caller's (a 503); run_read() retries those on the primary.
    """
    app = app or current_app
    pool = read_pool(app)
    if pool is not get_pool(app):
        try:
            conn = pool.getconn()
        except psycopg.OperationalError as exc:  # PoolTimeout included: the replica went away
            replica_monitor(app).mark_down(f"{type(exc).__name__}: {str(exc).strip()}")
        else:
            try:
                yield conn
            finally:
                if not conn.broken:
                    _idle_check.used(conn)
                pool.putconn(conn)
            return
    with connection(app) as conn:
        yield conn


def run_read(read: Callable[[psycopg.Connection], T], app: Flask | None = None) -> T:
    """Return ``read(conn)`` on read_pool(); if the replica fails it (down, a recovery conflict), on the primary.

    ``read`` must only read and must not stream to the client: it may run twice.
    """
    app = app or current_app
    pool = read_pool(app)
    if pool is not get_pool(app):
        try:
            with pool.connection() as conn:
                result = read(conn)
                _idle_check.used(conn)
                return result
        except psycopg.errors.QueryCanceled:
            raise  # the statement timeout: the same query would time out on the primary too
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            # A recovery conflict ("canceling statement due to conflict with recovery"): the replica is fine.
            log.info("replica read cancelled by recovery, retried on the primary", extra={"error": str(exc).strip()})
        except psycopg.OperationalError as exc:  # connection lost, PoolTimeout, shutting down
            replica_monitor(app).mark_down(f"{type(exc).__name__}: {str(exc).strip()}")
    with connection(app) as conn:
        return read(conn)


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
    """Stop this process's replica monitors and close every pool it opened (tests and shutdown)."""
    with _pools_lock:
        pid = os.getpid()
        for key in [k for k in _monitors if k[0] == pid]:
            _monitors.pop(key).stop()
        for key in [k for k in _pools if k[0] == pid]:
            _pools.pop(key).close()

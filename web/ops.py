"""Operations endpoints: /healthz, /readyz and /metrics (Prometheus text format), and ingest counters.

/metrics reports deployment-wide numbers: counters are kept in Redis (see common/metrics.py), so
every gunicorn worker, web dyno or container answers the same totals; gauges are read from Redis
and Postgres at scrape time. A server that cannot be reached is reported as ``energy_up 0`` and
its gauges are left out; the endpoint itself still answers 200.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from datetime import UTC, datetime

import psycopg
import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from common import metrics
from common.database import HISTORY_TABLES, load_sql
from common.streams import KIND_NAMES
from web import db
from web.auth import requires_scope
from web.backpressure import OverloadedError
from web.silent_devices import silent_count

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)

# Where web/auth.py (the identity check) keeps the request's principal (its key's scopes).
PRINCIPAL_ENVIRON_KEY = "energy.principal"


# -- ingest counters (called by web/telemetry.py) ----------------------------------------------


def count_accepted(meters: int, vehicles: int) -> None:
    """Count readings that Redis took, by kind."""
    buffer: metrics.CounterBuffer = current_app.extensions["metrics_buffer"]
    buffer.add("readings_accepted", meters, "meter")
    buffer.add("readings_accepted", vehicles, "vehicle")


def count_rejected(body, reason: str) -> None:
    """Count the readings of a refused body by the kind each item claims (meter, vehicle, unknown)."""
    items = body if isinstance(body, list) else [body]
    kinds = {"meter": 0, "vehicle": 0, "unknown": 0}
    for item in items:
        if isinstance(item, dict) and ("meterId" in item) != ("vehicleId" in item):
            kinds["meter" if "meterId" in item else "vehicle"] += 1
        else:
            kinds["unknown"] += 1
    buffer: metrics.CounterBuffer = current_app.extensions["metrics_buffer"]
    for kind, amount in kinds.items():
        buffer.add("readings_rejected", amount, kind, reason)


def check_backpressure(body) -> None:
    """Refuse the request (503 + Retry-After) while the drain is too far behind; count what was refused."""
    try:
        current_app.extensions["backpressure"].check()
    except OverloadedError:
        count_rejected(body, "overloaded")
        raise


# -- health -------------------------------------------------------------------------------------


@bp.get("/healthz")
def healthz():
    """Answer as long as the process is alive (liveness: touches no server)."""
    return {"status": "ok"}


class ReadinessProbe:
    """Probe Redis and Postgres (pooled connections) at most once per interval; callers share the answer.

    Eight load balancers asking every second cost one probe a second per process, not eight, and
    no probe opens a connection of its own. A failure's detail goes to the log once per probe.
    """

    def __init__(self, app: Flask, interval: float):
        self.app = app
        self.interval = interval
        self.probes = 0  # how many probes ran (tests read it)
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._checks: dict[str, dict] = {}

    def checks(self) -> dict[str, dict]:
        """Return each server's check (ok, latency or error), probing when the last one is stale."""
        if self._fresh():
            return self._checks
        with self._lock:
            if not self._fresh():
                self._checks = {"redis": self._run(self.app.extensions["redis"].ping),
                                "postgres": self._run(self._postgres)}
                replica = replica_check(self.app)
                if replica is not None:
                    self._checks["replica"] = replica
                self._checked_at = time.monotonic()
                self.probes += 1
            return self._checks

    def _fresh(self) -> bool:
        return self._checked_at is not None and time.monotonic() - self._checked_at < self.interval

    def _postgres(self) -> None:
        with db.connection(self.app) as conn:
            conn.execute("SELECT 1")

    @staticmethod
    def _run(check) -> dict:
        started = time.perf_counter()
        try:
            check()
        except (redis.RedisError, psycopg.Error, OSError) as exc:
            error = f"{type(exc).__name__}: {str(exc).strip()}"[:300]
            log.warning("readiness probe failed", extra={"error": error})
            return {"ok": False, "error": error}
        return {"ok": True, "latencyMs": round((time.perf_counter() - started) * 1000, 2)}


def replica_check(app: Flask) -> dict | None:
    """Return the replica's state from its monitor's last check (no probe of its own); None without a replica.

    ``ok`` says whether reads go there now; a replica that is down or lagging makes reads use the
    primary, so it never makes the process unready.
    """
    monitor = db.replica_monitor(app)
    if monitor is None:
        return None
    state = monitor.state
    check = {"ok": monitor.usable(), "up": state.up,
             "lagSeconds": None if state.lag_seconds in (None, math.inf) else round(state.lag_seconds, 3),
             "maxLagSeconds": monitor.max_lag_seconds, "reads": "replica" if monitor.usable() else "primary"}
    if state.error:
        check["error"] = state.error
    return check


def _may_see_detail() -> bool:
    """Tell whether the caller holds the ``metrics`` (or ``admin``) scope; anonymous callers do not.

    The principal is the one the identity check (web/auth.py) puts in the WSGI environ.
    """
    principal = request.environ.get(PRINCIPAL_ENVIRON_KEY)
    scopes = getattr(principal, "scopes", ()) or ()
    return "metrics" in scopes or "admin" in scopes


@bp.get("/readyz")
@requires_scope("metrics")
def readyz():
    """Answer 200 when Redis and Postgres both answer, else 503; only the ``metrics`` scope sees which and why.

    The replica, when configured, is reported but never makes the answer 503: reads fall back to the primary.
    """
    checks = current_app.extensions["readiness"].checks()
    ready = all(c["ok"] for name, c in checks.items() if name in ("redis", "postgres"))
    body = {"status": "ready" if ready else "unavailable"}
    if _may_see_detail():
        body["checks"] = checks
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    return response


# -- metrics ------------------------------------------------------------------------------------


class EngineCollector:
    """Build every metric family from Redis and Postgres at scrape time."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        """Yield the metric families (called by ``generate_latest``)."""
        client: redis.Redis = self.app.extensions["redis"]
        up = GaugeMetricFamily("energy_up", "1 if the server answered this scrape (the replica: its monitor's last "
                               "check), else 0.", labels=["server"])
        try:
            families = list(self._redis_families(client))
            up.add_metric(["redis"], 1)
        except redis.RedisError as exc:
            log.warning("metrics: redis unavailable", extra={"error": str(exc)})
            families = []
            up.add_metric(["redis"], 0)
        try:
            families += list(self._postgres_families())
            up.add_metric(["postgres"], 1)
        except psycopg.Error as exc:
            log.warning("metrics: postgres unavailable", extra={"error": str(exc).strip()})
            up.add_metric(["postgres"], 0)
        families += list(self._replica_families(up))
        yield up
        yield from families

    def _replica_families(self, up: GaugeMetricFamily):
        monitor = db.replica_monitor(self.app)
        if monitor is None:
            return
        state = monitor.state
        up.add_metric(["replica"], int(state.up))
        if state.lag_seconds is not None:
            yield GaugeMetricFamily(
                "energy_replica_lag_seconds",
                "How far the Postgres replica's replay is behind the primary (0 when it replayed all the primary "
                "wrote; +Inf when behind with nothing replayed yet), as of the last check (REPLICA_CHECK_SECONDS).",
                value=state.lag_seconds)
        yield GaugeMetricFamily("energy_replica_reads",
                                "1 while this process sends its read-only queries to the replica, 0 while to the "
                                "primary (replica down, lagging past REPLICA_MAX_LAG_SECONDS, or not a standby).",
                                value=int(monitor.usable()))

    def _redis_families(self, client: redis.Redis):
        counters = metrics.read_counters(client)
        for name, (help_text, labels) in metrics.COUNTERS.items():
            family = CounterMetricFamily(f"energy_{name}", help_text, labels=list(labels))
            defaults = _default_label_values(name)
            for label_values in sorted(set(counters[name]) | defaults):
                family.add_metric(list(label_values), counters[name].get(label_values, 0))
            yield family

        buckets, total, count = metrics.read_drain_histogram(client)
        yield HistogramMetricFamily(
            "energy_drain_batch_duration_seconds",
            "Time to write one drain batch to Postgres and acknowledge it; the count is the number of batches.",
            buckets=buckets, sum_value=total,
        )
        yield CounterMetricFamily("energy_drain_batches", "Drain batches written (committed and acknowledged).",
                                  value=count)

        keys = self.app.extensions["redis_keys"]
        load = metrics.read_stream_load(client, keys)
        oldest_pending, dead_letters = metrics.read_pending_and_dead(client, keys)
        oldest_age = 0.0
        if oldest_pending is not None:
            oldest_age = max(0.0, time.time() - metrics.entry_id_millis(oldest_pending) / 1000)
        gauges = (
            ("energy_stream_backlog",
             "Stream entries (one per request and shard) not yet written to Postgres (undelivered + pending), "
             "summed over the shards.",
             load.backlog),
            ("energy_stream_undelivered", "Stream entries no consumer has read yet (the group's lag).",
             load.undelivered if load.undelivered is not None else load.length),
            ("energy_stream_pending_entries", "Entries read by a drain but not yet acknowledged.", load.pending),
            ("energy_stream_oldest_pending_age_seconds",
             "Age of the oldest pending entry (since Redis took it); 0 when nothing is pending.", oldest_age),
            ("energy_stream_length",
             "Entries in the Redis streams, every shard (acknowledged ones stay until trimmed).", load.length),
            ("energy_dead_letters",
             "Readings in the dead-letter streams (every shard), waiting for replay or purge.", int(dead_letters)),
            ("energy_redis_used_memory_bytes", "Redis used_memory (on a cluster: of the fullest primary).",
             load.used_memory),
            ("energy_redis_maxmemory_bytes", "Redis maxmemory (0: no limit).", load.maxmemory),
        )
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=value)
        silent_after = self.app.config["SETTINGS"].silent_after
        redis_keys = self.app.extensions["redis_keys"]
        silent = GaugeMetricFamily("energy_devices_silent", f"Devices whose newest reading is older than "
                                   f"SILENT_AFTER ({silent_after} s), by kind.", labels=["kind"])
        for kind, kind_name in KIND_NAMES.items():
            silent.add_metric([kind_name], silent_count(client, redis_keys, kind, silent_after))
        yield silent
        gate = self.app.extensions.get("backpressure")
        overloaded = gate.judge(load) is not None if gate is not None else False
        yield GaugeMetricFamily("energy_ingest_overloaded",
                                "1 while ingest answers 503 because of the backlog or Redis memory.",
                                value=int(overloaded))

    def _postgres_families(self):
        today = datetime.now(UTC).date()
        # A pooled connection: a scrape opens at most one (none once the pool holds one).
        with db.connection(self.app) as conn:
            rows = conn.execute(load_sql("ops/partition_counts"),
                                {"tables": list(HISTORY_TABLES), "today": today}).fetchall()
        ahead = GaugeMetricFamily("energy_partitions_ahead",
                                  "Daily partitions present for days after today (UTC).", labels=["table"])
        behind = GaugeMetricFamily("energy_partitions_behind",
                                   "Daily partitions present for days before today (UTC).", labels=["table"])
        current = GaugeMetricFamily("energy_partition_today", "1 if today's (UTC) partition exists.",
                                    labels=["table"])
        for table, n_ahead, n_behind, n_today in rows:
            ahead.add_metric([table], n_ahead)
            behind.add_metric([table], n_behind)
            current.add_metric([table], n_today)
        yield from (ahead, behind, current)


def _default_label_values(name: str) -> set[tuple[str, ...]]:
    """Label values shown as 0 before anything is counted, so dashboards see every series."""
    kinds = tuple(KIND_NAMES.values())
    if name == "readings_accepted":
        return {(k,) for k in kinds}
    if name == "requests_rejected":
        return {(reason,) for reason in ("unauthorized", "forbidden", "rate_limited")}
    if name == "readings_rejected":
        reasons = ("invalid", "overloaded", "forbidden", "rate_limited", "not_stored")
        return {(k, reason) for k in (*kinds, "unknown") for reason in reasons}
    return {()} if not metrics.COUNTERS[name][1] else set()


@bp.get("/metrics")
@requires_scope("metrics")
def metrics_endpoint():
    """Expose every metric in the Prometheus text format."""
    buffer: metrics.CounterBuffer = current_app.extensions["metrics_buffer"]
    with contextlib.suppress(redis.RedisError):
        buffer.flush()  # this process's own recent increments, so a scrape sees them
    output = generate_latest(current_app.extensions["metrics_registry"])
    return Response(output, status=200, mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def init_app(app: Flask) -> None:
    """Register the ops endpoints, the counter buffer and the metrics registry on ``app``."""
    app.extensions["metrics_buffer"] = metrics.CounterBuffer(lambda: app.extensions["redis"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(app))
    app.extensions["metrics_registry"] = registry
    app.config.setdefault("READYZ_CACHE_SECONDS", 1.0)
    app.extensions["readiness"] = ReadinessProbe(app, app.config["READYZ_CACHE_SECONDS"])
    app.register_blueprint(bp)

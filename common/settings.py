"""Read every setting from the environment, once, in one place (12-factor)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field


class SettingsError(ValueError):
    """A setting in the environment has an unusable value."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")


# A rate limit as the `limits` library parses it: "120/minute", "10 per second", "1000/1 hour".
RATE_LIMIT_PATTERN = re.compile(r"^\s*[1-9]\d*\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?\s*$", re.IGNORECASE)


def _rate(env: dict[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not RATE_LIMIT_PATTERN.match(raw):
        raise SettingsError(f"{name} must be a rate such as 120/minute, got {raw!r}")
    return raw


# A drain slot serves its shards in turn; more shards than this only adds round trips.
MAX_STREAM_SHARDS = 256


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> int | None:
    """Return a duration such as ``900``, ``90s``, ``15m``, ``2h`` or ``1d`` in seconds; None if it is not one."""
    match = _DURATION.match(raw or "")
    if not match:
        return None
    return int(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]


def _duration(env: dict[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    seconds = parse_duration(raw)
    if not seconds:
        raise SettingsError(f"{name} must be a positive duration such as 900, 90s, 15m or 2h, got {raw!r}")
    return seconds


def normalize_database_url(url: str) -> str:
    """Accept Heroku-style ``postgres://`` URLs as well as ``postgresql://``."""
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://") :]
    return url


@dataclass(frozen=True)
class Settings:
    """Every knob of the engine, with defaults that work against the local servers."""

    database_url: str = "postgresql://127.0.0.1:5432/energy"
    redis_url: str = "redis://127.0.0.1:6379/0"
    port: int = 8000
    # The address gunicorn binds: loopback unless told (compose and the Dockerfile say 0.0.0.0;
    # on Heroku, where DYNO is set, the platform's router needs 0.0.0.0 too).
    web_host: str = "127.0.0.1"
    retention_days: int = 90
    partition_premake_days: int = 7
    max_clock_skew_seconds: int = 300
    max_readings_per_request: int = 5000
    max_request_bytes: int = 4 * 1024 * 1024
    drain_batch_size: int = 5000
    drain_block_ms: int = 1000
    drain_job_seconds: int = 30
    drain_linger_ms: int = 100
    drain_max_concurrency: int = 16
    reclaim_idle_seconds: int = 30
    dead_letter_after: int = 5
    redis_socket_timeout: float = 5.0
    # Scale-out (docs/scaling.md): streams sharded by device; a Redis Cluster for the data keys;
    # "accepted" meaning this many replicas confirmed the write (WAIT) within the timeout.
    stream_shards: int = 1
    redis_cluster_url: str = ""
    redis_min_replicas_ack: int = 0
    redis_wait_timeout_ms: int = 500
    # Backpressure: one hour of 10,000 meters + 10,000 vehicles at one reading a minute.
    backlog_limit: int = 1_200_000
    # Entries the stream may hold, acknowledged ones included: with the trim job stopped, the
    # stream stops growing here (ingest answers 503) instead of filling Redis.
    stream_length_limit: int = 2_400_000
    redis_memory_limit_ratio: float = 0.9
    backpressure_check_ms: int = 250
    backpressure_retry_after_seconds: int = 5
    # Counter rules: an increase implying more average power than this is implausible and adds nothing.
    # A depot's grid connection (several MW) and the fastest (megawatt) charging systems, with headroom.
    max_meter_power_kw: float = 10_000.0
    max_vehicle_power_kw: float = 4_000.0
    # Hourly rollups (scheduler/rollups.py): marks taken per maintenance transaction, how long one
    # job of the rollups worker runs, and how often it looks for new marks while it runs.
    rollup_batch_size: int = 2000
    rollup_job_seconds: int = 30
    rollup_poll_ms: int = 1000
    # How often the rollups worker vacuums the tables it churns (marks, tails, the day's rollups); 0: never
    # (leave them to autovacuum, which a server may have off or behind).
    rollup_vacuum_seconds: int = 60
    # History first: while the drain's oldest unwritten reading is older than this, the fold waits (it
    # competes with the drain for Postgres); 0: never wait. It folds anyway once a mark has waited
    # ROLLUP_MAX_DEFER_SECONDS.
    rollup_defer_lag_seconds: int = 10
    rollup_max_defer_seconds: int = 300
    # A device is silent when its newest reading is older than this (GET /v1/devices/silent's default
    # and the energy_devices_silent gauge).
    silent_after: int = 900
    # Signs the history API's page cursors; every web process must share it. Empty: derived from DATABASE_URL.
    cursor_secret: str = ""
    # auto: readable text with fields on a terminal, JSON lines otherwise (common/logging.py).
    log_format: str = "auto"
    log_level: str = "INFO"
    # A device's latest hash leaves Redis after this many days without a reading (reads then come
    # from Postgres *_latest), so new device ids cannot grow Redis without bound.
    latest_ttl_days: int = 30
    # Access control (web/auth.py, web/rate_limit.py, docs/security.md).
    device_key_rate_limit: str = "120/minute"
    api_key_rate_limit: str = "6000/minute"
    auth_failure_rate_limit: str = "30/minute"
    auth_cache_seconds: int = 900
    auth_cache_size: int = 100_000
    auth_revocation_poll_ms: int = 1000
    trusted_proxy_hops: int = 0
    # The scheduler logs one ingest summary line per this many seconds while readings flow (0: never).
    log_summary_seconds: int = 10
    # rediss:// (TLS, e.g. Heroku Redis): how the server certificate is checked.
    redis_ssl_cert_reqs: str = "required"
    redis_ssl_ca_certs: str = ""
    # gunicorn (gunicorn.conf.py reads these through Settings).
    web_concurrency: int = field(default_factory=lambda: (os.cpu_count() or 1) * 2)
    web_threads: int = 4
    web_worker_class: str = "gthread"
    web_timeout: int = 30
    web_graceful_timeout: int = 20
    # The web process's Postgres pool (web/db.py), per gunicorn worker.
    db_pool_min_size: int = 1
    db_pool_max_size: int = 4
    db_pool_timeout: float = 2.0
    db_connect_timeout: int = 2
    db_statement_timeout_ms: int = 10_000
    db_pool_check_idle_seconds: float = 2.0
    # Reads on a streaming replica (web/db.py, web/replica.py, docs/deploying.md). Empty: every read
    # goes to DATABASE_URL. Reads go back to the primary while the replica lags more than
    # REPLICA_MAX_LAG_SECONDS, cannot be reached (then for REPLICA_RETRY_SECONDS) or is not a standby.
    database_replica_url: str = ""
    replica_max_lag_seconds: float = 10.0
    replica_check_seconds: float = 1.0
    replica_retry_seconds: float = 5.0
    # The history tables are Citus distributed tables (docs/citus.md): retention detaches without CONCURRENTLY.
    postgres_flavor: str = "postgres"

    def cursor_key(self) -> bytes:
        """Return the key that signs page cursors (the same in every process of a deployment)."""
        return hashlib.sha256(("energy-cursor:" + (self.cursor_secret or self.database_url)).encode()).digest()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (default: the process environment)."""
        env = dict(os.environ if env is None else env)
        d = cls()
        return cls(
            database_url=normalize_database_url(env.get("DATABASE_URL") or d.database_url),
            redis_url=env.get("REDIS_URL") or d.redis_url,
            port=_int(env, "PORT", d.port, 1),
            web_host=(env.get("WEB_HOST") or "").strip() or ("0.0.0.0" if env.get("DYNO") else d.web_host),
            retention_days=_int(env, "RETENTION_DAYS", d.retention_days, 1),
            partition_premake_days=_int(env, "PARTITION_PREMAKE_DAYS", d.partition_premake_days, 1),
            max_clock_skew_seconds=_int(env, "MAX_CLOCK_SKEW_SECONDS", d.max_clock_skew_seconds, 0),
            max_readings_per_request=_int(env, "MAX_READINGS_PER_REQUEST", d.max_readings_per_request, 1),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", d.max_request_bytes, 1024),
            drain_batch_size=_int(env, "DRAIN_BATCH_SIZE", d.drain_batch_size, 1),
            drain_block_ms=_int(env, "DRAIN_BLOCK_MS", d.drain_block_ms, 10),
            drain_job_seconds=_int(env, "DRAIN_JOB_SECONDS", d.drain_job_seconds, 1),
            drain_linger_ms=_int(env, "DRAIN_LINGER_MS", d.drain_linger_ms, 0),
            drain_max_concurrency=_int(env, "DRAIN_MAX_CONCURRENCY", d.drain_max_concurrency, 1),
            reclaim_idle_seconds=_int(env, "RECLAIM_IDLE_SECONDS", d.reclaim_idle_seconds, 1),
            dead_letter_after=_int(env, "DEAD_LETTER_AFTER", d.dead_letter_after, 1),
            redis_socket_timeout=_float(env, "REDIS_SOCKET_TIMEOUT", d.redis_socket_timeout, 0.1),
            stream_shards=_int(env, "STREAM_SHARDS", d.stream_shards, 1),
            redis_cluster_url=(env.get("REDIS_CLUSTER_URL") or "").strip(),
            redis_min_replicas_ack=_int(env, "REDIS_MIN_REPLICAS_ACK", d.redis_min_replicas_ack, 0),
            redis_wait_timeout_ms=_int(env, "REDIS_WAIT_TIMEOUT_MS", d.redis_wait_timeout_ms, 1),
            backlog_limit=_int(env, "BACKLOG_LIMIT", d.backlog_limit, 1),
            stream_length_limit=_int(env, "STREAM_LENGTH_LIMIT", d.stream_length_limit, 1),
            redis_memory_limit_ratio=_float(env, "REDIS_MEMORY_LIMIT_RATIO", d.redis_memory_limit_ratio, 0.01),
            backpressure_check_ms=_int(env, "BACKPRESSURE_CHECK_MS", d.backpressure_check_ms, 0),
            backpressure_retry_after_seconds=_int(
                env, "BACKPRESSURE_RETRY_AFTER_SECONDS", d.backpressure_retry_after_seconds, 1
            ),
            max_meter_power_kw=_float(env, "MAX_METER_POWER_KW", d.max_meter_power_kw, 0.001),
            max_vehicle_power_kw=_float(env, "MAX_VEHICLE_POWER_KW", d.max_vehicle_power_kw, 0.001),
            rollup_batch_size=_int(env, "ROLLUP_BATCH_SIZE", d.rollup_batch_size, 1),
            rollup_job_seconds=_int(env, "ROLLUP_JOB_SECONDS", d.rollup_job_seconds, 1),
            rollup_poll_ms=_int(env, "ROLLUP_POLL_MS", d.rollup_poll_ms, 10),
            rollup_vacuum_seconds=_int(env, "ROLLUP_VACUUM_SECONDS", d.rollup_vacuum_seconds, 0),
            rollup_defer_lag_seconds=_int(env, "ROLLUP_DEFER_LAG_SECONDS", d.rollup_defer_lag_seconds, 0),
            rollup_max_defer_seconds=_int(env, "ROLLUP_MAX_DEFER_SECONDS", d.rollup_max_defer_seconds, 1),
            silent_after=_duration(env, "SILENT_AFTER", d.silent_after),
            cursor_secret=env.get("CURSOR_SECRET") or d.cursor_secret,
            log_format=_choice(env, "LOG_FORMAT", d.log_format, ("auto", "json", "text")),
            log_level=_choice(env, "LOG_LEVEL", d.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
            latest_ttl_days=_int(env, "LATEST_TTL_DAYS", d.latest_ttl_days, 1),
            device_key_rate_limit=_rate(env, "DEVICE_KEY_RATE_LIMIT", d.device_key_rate_limit),
            api_key_rate_limit=_rate(env, "API_KEY_RATE_LIMIT", d.api_key_rate_limit),
            auth_failure_rate_limit=_rate(env, "AUTH_FAILURE_RATE_LIMIT", d.auth_failure_rate_limit),
            auth_cache_seconds=_int(env, "AUTH_CACHE_SECONDS", d.auth_cache_seconds, 1),
            auth_cache_size=_int(env, "AUTH_CACHE_SIZE", d.auth_cache_size, 1),
            auth_revocation_poll_ms=_int(env, "AUTH_REVOCATION_POLL_MS", d.auth_revocation_poll_ms, 10),
            trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", d.trusted_proxy_hops, 0),
            log_summary_seconds=_int(env, "LOG_SUMMARY_SECONDS", d.log_summary_seconds, 0),
            redis_ssl_cert_reqs=_choice(env, "REDIS_SSL_CERT_REQS", d.redis_ssl_cert_reqs, ("required", "none")),
            redis_ssl_ca_certs=(env.get("REDIS_SSL_CA_CERTS") or "").strip(),
            web_concurrency=_int(env, "WEB_CONCURRENCY", d.web_concurrency, 1),
            web_threads=_int(env, "WEB_THREADS", d.web_threads, 1),
            web_worker_class=_choice(env, "WEB_WORKER_CLASS", d.web_worker_class, ("gthread", "sync")),
            web_timeout=_int(env, "WEB_TIMEOUT", d.web_timeout, 1),
            web_graceful_timeout=_int(env, "WEB_GRACEFUL_TIMEOUT", d.web_graceful_timeout, 0),
            db_pool_min_size=_int(env, "DB_POOL_MIN_SIZE", d.db_pool_min_size, 0),
            db_pool_max_size=_int(env, "DB_POOL_MAX_SIZE", d.db_pool_max_size, 1),
            db_pool_timeout=_float(env, "DB_POOL_TIMEOUT", d.db_pool_timeout, 0.1),
            db_connect_timeout=_int(env, "DB_CONNECT_TIMEOUT", d.db_connect_timeout, 1),
            db_statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", d.db_statement_timeout_ms, 0),
            db_pool_check_idle_seconds=_float(env, "DB_POOL_CHECK_IDLE_SECONDS", d.db_pool_check_idle_seconds, 0.0),
            database_replica_url=normalize_database_url((env.get("DATABASE_REPLICA_URL") or "").strip()),
            replica_max_lag_seconds=_float(env, "REPLICA_MAX_LAG_SECONDS", d.replica_max_lag_seconds, 0.0),
            replica_check_seconds=_float(env, "REPLICA_CHECK_SECONDS", d.replica_check_seconds, 0.1),
            replica_retry_seconds=_float(env, "REPLICA_RETRY_SECONDS", d.replica_retry_seconds, 0.1),
            postgres_flavor=_choice(env, "POSTGRES_FLAVOR", d.postgres_flavor, ("postgres", "citus")),
        )

    def __post_init__(self):
        if self.db_pool_min_size > self.db_pool_max_size:
            raise SettingsError(
                f"DB_POOL_MIN_SIZE ({self.db_pool_min_size}) must be <= DB_POOL_MAX_SIZE ({self.db_pool_max_size})"
            )
        if self.stream_shards > MAX_STREAM_SHARDS:
            raise SettingsError(f"STREAM_SHARDS must be <= {MAX_STREAM_SHARDS}, got {self.stream_shards}")
        if self.redis_cluster_url and not self.redis_cluster_url.startswith(("redis://", "rediss://")):
            raise SettingsError(
                f"REDIS_CLUSTER_URL must be a redis:// or rediss:// URL, got {self.redis_cluster_url!r}"
            )
        if self.redis_ssl_ca_certs and not os.path.isfile(self.redis_ssl_ca_certs):
            raise SettingsError(f"REDIS_SSL_CA_CERTS must name a readable file, got {self.redis_ssl_ca_certs!r}")

    def resolved_log_format(self, stream=None) -> str:
        """Return ``json`` or ``text``: ``auto`` is text when ``stream`` (default stdout) is a terminal."""
        if self.log_format != "auto":
            return self.log_format
        import sys

        stream = stream or sys.stdout
        return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"

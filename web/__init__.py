"""The web process: a Flask app factory in the style of the Flask tutorial."""

from __future__ import annotations

from flask import Flask

from common.redis_clients import data_client, plain_data_client
from common.settings import Settings
from common.streams import KeySpace
from web.json_provider import OrjsonProvider


def create_app(settings: Settings | None = None) -> Flask:
    """Create the API application; ``settings`` default to the environment."""
    app = build_app_without_access_control(settings)
    from web import auth, rate_limit

    auth.init_app(app)  # after the request log (it times the check too), before the rate limits
    rate_limit.init_app(app, auth.current_principal)
    return app


def build_app_without_access_control(settings: Settings | None = None) -> Flask:
    """Build the app without its key check and rate limits: only create_app adds them.

    Only the benchmark serves this (bench/unguarded_app.py), to measure what access control costs.
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        MAX_READINGS_PER_REQUEST=settings.max_readings_per_request,
        JSON_SORT_KEYS=False,
    )
    app.json = OrjsonProvider(app)

    from web import cli, errors, latest, telemetry
    from web.latest_state import LatestStateStore

    app.extensions["redis"] = data_client(settings)
    app.extensions["redis_keys"] = KeySpace.for_settings(settings)
    app.extensions["latest_state"] = LatestStateStore(
        app.extensions["redis"],
        app.extensions["redis_keys"],
        ttl_days=settings.latest_ttl_days,
        # On a cluster the rate-limit counters stay on REDIS_URL, beside Flask-Limiter's.
        counter_client=plain_data_client(settings) if settings.redis_cluster_url else None,
        min_replicas_ack=settings.redis_min_replicas_ack,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    app.extensions["reading_parser"] = telemetry.ReadingParser(
        settings.max_clock_skew_seconds, settings.retention_days
    )

    errors.init_app(app)
    cli.init_app(app)
    app.register_blueprint(telemetry.bp)
    app.register_blueprint(latest.bp)

    from web import analytics, conflicts, dashboard, db, fleet, history, keys, mappings, openapi, silent_devices

    db.init_app(app)  # the Postgres pool opens lazily, per process, on first use
    keys.init_app(app)  # /v1/keys and the `keys` CLI
    app.register_blueprint(mappings.bp)
    app.register_blueprint(analytics.bp)
    app.register_blueprint(fleet.bp)
    app.register_blueprint(silent_devices.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(conflicts.bp)
    openapi.init_app(app)  # /openapi.json and /docs
    app.register_blueprint(dashboard.bp)  # / (its files under /static)

    from web import backpressure, ops, request_log

    backpressure.init_app(app)
    ops.init_app(app)  # /healthz, /readyz, /metrics
    request_log.init_app(app)

    return app

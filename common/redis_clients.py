"""Build Redis clients: one for data (decoded strings) and one for RQ (raw bytes, as RQ requires)."""

from __future__ import annotations

import redis

from common.settings import Settings


def tls_options(settings: Settings) -> dict:
    """Return redis-py's certificate options for a ``rediss://`` URL (REDIS_SSL_CERT_REQS, REDIS_SSL_CA_CERTS)."""
    if not settings.redis_url.startswith("rediss://"):
        return {}
    # Heroku Redis presents a self-signed certificate: it needs REDIS_SSL_CERT_REQS=none (the link is still encrypted).
    options = {"ssl_cert_reqs": settings.redis_ssl_cert_reqs}
    if settings.redis_ssl_ca_certs:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return options


def data_client(settings: Settings, socket_timeout: float | None = None) -> redis.Redis:
    """Return a client for latest state and the stream; responses are decoded to ``str``."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=socket_timeout or settings.redis_socket_timeout,
        socket_connect_timeout=min(2.0, settings.redis_socket_timeout),
        health_check_interval=30,
        **tls_options(settings),
    )


def rq_client(settings: Settings) -> redis.Redis:
    """Return a client for RQ, which cannot use ``decode_responses=True``."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=min(2.0, settings.redis_socket_timeout),
        health_check_interval=30,
        **tls_options(settings),
    )

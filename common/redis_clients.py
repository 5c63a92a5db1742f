"""Build Redis clients: one for data (decoded strings) and one for RQ (raw bytes, as RQ requires).

With ``REDIS_CLUSTER_URL`` the data client is a ``RedisCluster`` (it discovers the other nodes
from the one named); RQ cannot run on a cluster (rq/rq#862) and keeps the plain ``REDIS_URL``.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from common.settings import Settings


def tls_options(settings: Settings, url: str | None = None) -> dict:
    """Return redis-py's certificate options for a ``rediss://`` URL (REDIS_SSL_CERT_REQS, REDIS_SSL_CA_CERTS)."""
    if not (url or settings.redis_url).startswith("rediss://"):
        return {}
    # Heroku Redis presents a self-signed certificate: it needs REDIS_SSL_CERT_REQS=none (the link is still encrypted).
    options = {"ssl_cert_reqs": settings.redis_ssl_cert_reqs}
    if settings.redis_ssl_ca_certs:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return options


def is_cluster(client) -> bool:
    """Tell whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def data_client(settings: Settings, socket_timeout: float | None = None) -> redis.Redis | RedisCluster:
    """Return a client for latest state, the streams and the metrics; responses are decoded to ``str``."""
    if settings.redis_cluster_url:
        return RedisCluster.from_url(
            settings.redis_cluster_url,
            decode_responses=True,
            socket_timeout=socket_timeout or settings.redis_socket_timeout,
            socket_connect_timeout=min(2.0, settings.redis_socket_timeout),
            health_check_interval=30,
            **tls_options(settings, settings.redis_cluster_url),
        )
    return plain_data_client(settings, socket_timeout)


def plain_data_client(settings: Settings, socket_timeout: float | None = None) -> redis.Redis:
    """Return a decoded client on ``REDIS_URL`` (the data client when there is no cluster)."""
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

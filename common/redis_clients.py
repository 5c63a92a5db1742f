"""Build Redis clients: one for data (decoded strings) and one for RQ (raw bytes, as RQ requires)."""

from __future__ import annotations

import redis

from common.settings import Settings


def data_client(settings: Settings, socket_timeout: float | None = None) -> redis.Redis:
    """Return a client for latest state and the stream; responses are decoded to ``str``."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=socket_timeout or settings.redis_socket_timeout,
        socket_connect_timeout=min(2.0, settings.redis_socket_timeout),
        health_check_interval=30,
    )


def rq_client(settings: Settings) -> redis.Redis:
    """Return a client for RQ, which cannot use ``decode_responses=True``."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=min(2.0, settings.redis_socket_timeout),
        health_check_interval=30,
    )

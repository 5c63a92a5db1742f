"""Maintenance jobs the scheduler enqueues (run by the workers); each is idempotent and safe to run twice."""

from __future__ import annotations

import contextlib

import redis

from common import metrics
from common.redis_clients import data_client
from common.settings import Settings
from common.streams import KeySpace
from scheduler import partitions
from workers import stream_maintenance


def maintain_partitions() -> dict:
    """Create the daily partitions up to ``today + premake``; drop those older than the retention window."""
    settings = Settings.from_env()
    result = partitions.maintain_partitions(settings)
    if result["dropped"]:
        with contextlib.suppress(redis.RedisError):
            metrics.incr(data_client(settings), "partitions_dropped", len(result["dropped"]))
    return result


def reclaim_stale_entries() -> dict:
    """Write and acknowledge stream entries pending longer than RECLAIM_IDLE_SECONDS."""
    settings = Settings.from_env()
    client = data_client(settings)
    try:
        return stream_maintenance.reclaim_stale_entries(settings, client)
    finally:
        client.close()


def trim_stream() -> dict:
    """Remove acknowledged entries from every shard's stream (never a pending or undelivered one)."""
    settings = Settings.from_env()
    client = data_client(settings)
    try:
        return stream_maintenance.trim_streams(client, KeySpace.for_settings(settings))
    finally:
        client.close()

"""Maintenance jobs the scheduler enqueues; each is idempotent."""

from __future__ import annotations

from common.database import connect, ensure_partitions
from common.settings import Settings


def maintain_partitions() -> dict:
    """Create the daily partitions from ``today - retention`` to ``today + premake``."""
    settings = Settings.from_env()
    with connect(settings) as conn:
        created = ensure_partitions(conn, settings)
    return {"partitions_created": created}

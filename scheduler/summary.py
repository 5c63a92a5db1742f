"""The periodic ingest summary line: readings/s accepted and rejected, rows written, drain backlog and lag.

It replaces a log line per request (web/request_log.py logs only failed requests): the counters are
the deployment-wide ones in Redis (common/metrics.py), so one line speaks for every web process. The
scheduler writes it because exactly one scheduler runs. Nothing is logged while nothing moves.
"""

from __future__ import annotations

import logging
import time

import redis

from common import metrics
from common.streams import SINGLE, KeySpace

log = logging.getLogger("summary")


def _totals(counters: dict[str, dict[tuple[str, ...], int]]) -> dict[str, int]:
    return {
        "accepted": sum(counters["readings_accepted"].values()),
        "rejected": sum(counters["readings_rejected"].values()),
        "written": sum(counters["rows_written"].values()),
    }


def oldest_pending_age_seconds(client: redis.Redis, now: float, keys: KeySpace = SINGLE) -> float:
    """Return how long the oldest read-but-unacknowledged entry of any shard has waited (0 when none)."""
    oldest, _dead = metrics.read_pending_and_dead(client, keys)
    return round(max(0.0, now - metrics.entry_id_millis(oldest) / 1000), 1) if oldest else 0.0


class IngestSummary:
    """Log one ``ingest summary`` line per ``interval`` seconds while readings are accepted, rejected or drained."""

    def __init__(self, client: redis.Redis, interval: float, keys: KeySpace = SINGLE):
        self.client = client
        self.keys = keys
        self.interval = interval
        self._last: tuple[float, dict[str, int]] | None = None

    def tick(self, now: float | None = None) -> dict | None:
        """Log the summary if ``interval`` passed since the last one and anything moved; return its fields."""
        if self.interval <= 0:
            return None
        now = time.time() if now is None else now
        if self._last is not None and now - self._last[0] < self.interval:
            return None
        totals = _totals(metrics.read_counters(self.client))
        previous, self._last = self._last, (now, totals)
        if previous is None:
            return None  # the first reading is the baseline
        seconds = now - previous[0]
        delta = {name: totals[name] - previous[1].get(name, 0) for name in totals}
        load = metrics.read_stream_load(self.client, self.keys)
        if not any(delta.values()) and not load.backlog:
            return None
        fields = {
            "accepted_per_s": round(delta["accepted"] / seconds, 1),
            "rejected_per_s": round(delta["rejected"] / seconds, 1),
            "written_per_s": round(delta["written"] / seconds, 1),
            "accepted": delta["accepted"],
            "rejected": delta["rejected"],
            "backlog": load.backlog,
            "drain_lag_seconds": oldest_pending_age_seconds(self.client, now, self.keys),
        }
        log.info("ingest summary", extra=fields)
        return fields

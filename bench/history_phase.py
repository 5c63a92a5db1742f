"""Bench phase of the history API (issue 14): raw pages, hourly buckets and CSV, with the analytics day loaded."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from bench import fleet

PAGE_LIMIT = 1_000
HISTORY_REQUESTS = 1_000  # per figure (a third of that at the smoke size)


def _z(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def history_paths(vehicle_ids: list[str], end: datetime, minutes: int) -> dict[str, list[str]]:
    """Return the request paths of each figure for the loaded day ending (minute-aligned) at ``end``."""
    first = end - timedelta(minutes=minutes)  # the day's first reading: the window (first - 1 min, end]
    hour = end.replace(minute=0)
    window = f"from={_z(first - timedelta(minutes=1))}&to={_z(end)}"
    return {
        "history_page": [f"/v1/vehicles/{v}/readings?{window}&limit={PAGE_LIMIT}" for v in vehicle_ids],
        "history_buckets": [f"/v1/vehicles/{v}/readings?interval=1h&from={_z(hour - timedelta(hours=24))}"
                            f"&to={_z(hour)}" for v in vehicle_ids],
        "history_csv": [f"/v1/vehicles/{v}/readings?{window}&format=csv" for v in vehicle_ids],
    }


def run(bench, end: datetime, sample: list[int]) -> None:
    """Measure each figure with one closed-loop client, as the analytics figure is measured."""
    rng = random.Random(14)
    vehicle_ids = [fleet.vehicle_id(i) for i in rng.sample(sample, min(200, len(sample)))]
    requests = HISTORY_REQUESTS if bench.size.name == "full" else HISTORY_REQUESTS // 3
    minutes = bench.size.history_minutes
    for key, paths in history_paths(vehicle_ids, end, minutes).items():
        result = bench.loadgen(key, {
            "mode": "closed", "concurrency": 1, "duration": 600, "requests": requests,
            "warmup": 0, "workload": {"kind": "get", "paths": paths},
        })
        bench.results["phases"][key] = result
        failed = result["requests"] - result["ok"]
        note = f"{len(vehicle_ids)} vehicles, {bench.size.history_devices:,} devices x {minutes} minutes loaded"
        if failed:
            note += f"; {failed:,} failed: {result.get('first_failure') or result.get('statuses')}"[:200]
        bench.figure(key, p50=result["latency_ms"]["p50"], p95=result["latency_ms"]["p95"], unit="ms", note=note)

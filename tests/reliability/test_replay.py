"""Replay equivalence: 100,000 readings in time order, then shuffled with 10% duplicates into a fresh
database and Redis db: history, latest state (Postgres and Redis) and analytics answers are identical.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest

from tests.reliability import invariants
from tests.reliability.datasets import (
    ReplayDataset,
    batches,
    reading_key,
    replay_dataset,
    shuffled_with_duplicates,
    time_ordered,
)
from tests.reliability.processes import REPO
from tests.reliability.report import REPORT
from tests.reliability.servers import wait_until

SECTION = "replay equivalence"
BATCH_SIZE = 500
DRAIN_DEADLINE_SECONDS = 240


@dataclass
class Snapshot:
    """Everything a reader can see after an ingest."""

    history: dict
    postgres_latest: dict
    redis_latest: dict
    analytics: dict
    readings_sent: int
    ingest_seconds: float


def _ingest(make_stack, name: str, redis_db: int, data: ReplayDataset, readings: list[dict], threads: int,
            work_dir) -> Snapshot:
    stack = make_stack(name, redis_db)
    stack.start(workers=2, scheduler=True)
    try:
        http = stack.http()
        for vehicle_id, meter_id in data.mappings:
            answer = http.post_json("/v1/mappings", {"vehicleId": vehicle_id, "meterId": meter_id})
            assert answer.status in (200, 201), answer.body
        plan = [{"i": i, "body": body} for i, body in enumerate(batches(readings, BATCH_SIZE))]
        plan_path, out_path = work_dir / f"{name}.plan.jsonl", work_dir / f"{name}.out.jsonl"
        plan_path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in plan))
        started = time.monotonic()
        with open(stack.processes.log_dir / "load-client.log", "wb") as log:
            subprocess.run(
                [sys.executable, "-m", "tests.reliability.load_client", "--port", str(stack.port), "--plan",
                 str(plan_path), "--out", str(out_path), "--threads", str(threads), "--give-up-seconds", "120",
                 "--token", stack.token],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=600,
            )
        statuses = [orjson.loads(line)["status"] for line in out_path.read_bytes().splitlines()]
        assert statuses == [202] * len(plan), f"not every batch was accepted: {sorted(set(statuses))}"
        expected_rows = len({reading_key(r) for r in readings})

        def stored_all() -> bool:
            if not stack.drained():
                return False
            with stack.connect() as conn:
                return invariants.history_count(conn) == expected_rows

        wait_until(stored_all, DRAIN_DEADLINE_SECONDS, f"{name}: every reading in history", interval=0.25)
        ingest_seconds = time.monotonic() - started
        with stack.connect() as conn:
            history = invariants.history(conn)
            pg_latest = invariants.postgres_latest(conn)
        client = stack.redis()
        redis_latest = invariants.redis_latest_raw(client)
        client.close()
        analytics = {}
        for query in data.analytics_queries:
            answer = http.get(query)
            assert answer.status == 200, (query, answer.status, answer.body[:300])
            analytics[query] = answer.json()
        http.close()
    finally:
        stack.stop()  # free the CPU for the next run
    return Snapshot(history, pg_latest, redis_latest, analytics, len(readings), ingest_seconds)


def _differences(a: dict, b: dict) -> list:
    return [k for k in set(a) | set(b) if a.get(k) != b.get(k)]


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_replay_order_and_duplicates_change_nothing(make_stack, tmp_path):
    data = replay_dataset(datetime.now(UTC))
    ordered = _ingest(make_stack, "replay_ordered", 1, data, time_ordered(data.readings), 1, tmp_path)
    shuffled = _ingest(make_stack, "replay_shuffled", 2, data, shuffled_with_duplicates(data.readings, 0.1), 2,
                       tmp_path)

    history_diff = _differences(ordered.history, shuffled.history)
    pg_latest_diff = _differences(ordered.postgres_latest, shuffled.postgres_latest)
    redis_latest_diff = _differences(ordered.redis_latest, shuffled.redis_latest)
    analytics_diff = _differences(ordered.analytics, shuffled.analytics)
    resets_seen = sum(1 for a in ordered.analytics.values() if a["counterResets"]["meter"] or
                      a["counterResets"]["vehicle"])
    add = REPORT.add
    add(SECTION, "readings: ordered run / shuffled run (10% duplicates)",
        f"{ordered.readings_sent:,} / {shuffled.readings_sent:,}")
    add(SECTION, "history rows: ordered / shuffled", f"{len(ordered.history):,} / {len(shuffled.history):,}",
        f"{len(data.readings):,} each")
    add(SECTION, "history rows that differ", len(history_diff), "0")
    add(SECTION, "Postgres latest rows that differ", len(pg_latest_diff), "0")
    add(SECTION, "Redis latest hashes that differ", len(redis_latest_diff), "0")
    add(SECTION, "analytics answers compared (with counter resets)", f"{len(ordered.analytics):,} ({resets_seen})")
    add(SECTION, "analytics answers that differ", len(analytics_diff), "0")
    add(SECTION, "ingest + drain seconds: ordered / shuffled",
        f"{ordered.ingest_seconds:.1f} / {shuffled.ingest_seconds:.1f}")

    assert len(ordered.history) == len(data.readings)
    assert history_diff == [], f"{len(history_diff)} history rows differ, e.g. {history_diff[:3]}"
    assert pg_latest_diff == [], f"Postgres latest differs for {pg_latest_diff[:5]}"
    assert len(ordered.redis_latest) == len({(r.get("meterId"), r.get("vehicleId")) for r in data.readings})
    assert redis_latest_diff == [], f"Redis latest differs for {redis_latest_diff[:5]}"
    assert analytics_diff == [], (f"{len(analytics_diff)} analytics answers differ, e.g. "
                                  f"{[(q, ordered.analytics[q], shuffled.analytics[q]) for q in analytics_diff[:2]]}")
    assert resets_seen > 0, "the data set should exercise counter resets"

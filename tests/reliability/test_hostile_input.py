"""Hostile input: thousands of generated bodies against the real gunicorn; never a 5xx, never a partial write.

The stack here runs the web process alone (no drain), so the stream's length tells exactly what
each request wrote. Redis memory is measured before and after the hostile bodies.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from common.streams import STREAM_KEY, decode_record
from tests.reliability.hostile_bodies import Case, fixed_hostile_examples, hostile_bodies, mixed_batches
from tests.reliability.http_client import HttpClient, Response, post_streaming
from tests.reliability.report import REPORT
from tests.reliability.servers import wait_until

SECTION = "hostile input"
HOSTILE_EXAMPLES = int(os.environ.get("RELIABILITY_HOSTILE_EXAMPLES", "2500"))
MIXED_EXAMPLES = int(os.environ.get("RELIABILITY_MIXED_EXAMPLES", "1000"))
# The web counts refused readings in a few fixed Redis hash fields (metrics:*); the allocator's
# figures move by some kilobytes on their own. A key or an entry per request would be far more.
METRICS_PREFIX = "metrics:"
MEMORY_TOLERANCE_BYTES = 64 * 1024
STREAMING_BYTES = 1024 * 1024
_HYPOTHESIS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                              HealthCheck.large_base_example],
}


@pytest.fixture(scope="module")
def web_only(make_stack, private_servers):
    # Memory is measured server-wide: other tests' keys (RQ jobs expiring) must not move it.
    private_servers[1].client().flushall()
    stack = make_stack("hostile", redis_db=3)
    stack.start(workers=0, scheduler=False)
    return stack


def _send(client: HttpClient, case: Case) -> Response:
    """POST the case; big bodies go in chunks, since a server may answer 413 before reading them."""
    if len(case.body) > STREAMING_BYTES:
        return post_streaming(client.host, client.port, "/v1/telemetry", case.body, case.content_type,
                              token=client.token)
    return client.request("POST", "/v1/telemetry", case.body, content_type=case.content_type)


def _memory(client) -> dict:
    info = client.info("memory")
    return {"used_memory": int(info["used_memory"]), "used_memory_dataset": int(info["used_memory_dataset"]),
            "connected_clients": int(client.info("clients")["connected_clients"])}


def _warm_up(stack, connections: int = 8, requests: int = 40) -> None:
    """Refuse a few bodies on several connections at once, so that every gunicorn worker has opened its
    Redis connection and the metrics counters have their fields before the baseline is taken."""
    bodies = (b"{}", b"[1]", b"nope", b'{"meterId": "m"}', b'{"vehicleId": "v"}')

    def run() -> None:
        client = stack.http()
        try:
            for n in range(requests):
                client.request("POST", "/v1/telemetry", bodies[n % len(bodies)])
        finally:
            client.close()

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def _keys(client) -> set[str]:
    """Return the db's keys, leaving out the web's fixed-size metrics counters."""
    return {k for k in client.scan_iter(count=1000) if not k.startswith(METRICS_PREFIX)}


def _settle(client, seconds: float = 3.0) -> None:
    """Wait until the dataset memory stops moving (web processes flush counters every second or so)."""
    deadline = time.monotonic() + seconds
    last = _memory(client)["used_memory_dataset"]
    while time.monotonic() < deadline:
        time.sleep(1.2)
        now = _memory(client)["used_memory_dataset"]
        if now == last:
            return
        last = now


def _latest_keys(client, case: Case) -> int:
    keys = [f"latest:{kind}:{device_id}" for kind, device_id in case.device_ids]
    return int(client.exists(*keys)) if keys else 0


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_hostile_bodies_are_refused_and_leave_nothing(web_only):
    client = web_only.http(timeout=120)
    redis_client = web_only.redis()
    statuses: Counter = Counter()
    labels: Counter = Counter()

    _warm_up(web_only)
    # The probes below allocate a little in Redis the first time they run: run them before the baseline.
    _keys(redis_client), redis_client.xlen(STREAM_KEY), redis_client.exists("latest:meter:m")
    _settle(redis_client)
    baseline = _memory(redis_client)
    keys_before = _keys(redis_client)
    stream_before = redis_client.xlen(STREAM_KEY)

    @settings(max_examples=HOSTILE_EXAMPLES, **_HYPOTHESIS)
    @given(case=hostile_bodies())
    def check(case: Case) -> None:
        check_one(case)

    def check_one(case: Case) -> None:
        before = redis_client.xlen(STREAM_KEY)
        answer = _send(client, case)
        statuses[answer.status] += 1
        labels[case.label] += 1
        assert answer.status < 500, f"{case.label}: {answer.status} {answer.body[:500]!r}"
        assert 400 <= answer.status < 500, f"{case.label} accepted: {answer.status} {answer.body[:300]!r}"
        assert "error" in answer.json()
        assert redis_client.xlen(STREAM_KEY) == before, f"{case.label}: a refused body wrote to the stream"
        assert _latest_keys(redis_client, case) == 0, f"{case.label}: a refused body wrote latest state"

    try:
        for case in fixed_hostile_examples():
            check_one(case)
        check()
    finally:
        client.close()
    assert redis_client.xlen(STREAM_KEY) == stream_before
    assert not list(redis_client.scan_iter("latest:*", count=1000))
    assert _keys(redis_client) == keys_before, "refused bodies left keys behind"

    def memory_back() -> dict | None:
        now = _memory(redis_client)
        grown = now["used_memory_dataset"] - baseline["used_memory_dataset"]
        return now if grown <= MEMORY_TOLERANCE_BYTES else None

    try:
        after = wait_until(memory_back, 15, "Redis dataset memory to return to its baseline", interval=0.5)
    finally:
        after = _memory(redis_client)
        REPORT.add(SECTION, "hostile bodies sent", sum(statuses.values()), ">= 2,000")
        REPORT.add(SECTION, "answers by status", ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items())))
        REPORT.add(SECTION, "5xx answers", sum(n for s, n in statuses.items() if s >= 500), "0")
        REPORT.add(SECTION, "partial writes (stream entries / latest keys)", "0 / 0", "0 / 0")
        REPORT.add(SECTION, "Redis dataset memory delta (bytes)",
                   after["used_memory_dataset"] - baseline["used_memory_dataset"], f"<= {MEMORY_TOLERANCE_BYTES:,}")
        REPORT.add(SECTION, "Redis used_memory delta (bytes), clients before/after",
                   f"{after['used_memory'] - baseline['used_memory']:,} "
                   f"({baseline['connected_clients']}/{after['connected_clients']} clients)")
    redis_client.close()
    assert sum(statuses.values()) >= min(HOSTILE_EXAMPLES, 2000)


def _last_entry_id(redis_client) -> str:
    last = redis_client.xrevrange(STREAM_KEY, count=1)
    return last[0][0] if last else "0-0"


def _readings_after(redis_client, entry_id: str) -> int:
    """Count the readings the stream took after entry ``entry_id`` (an entry holds a request's readings)."""
    entries = redis_client.xrange(STREAM_KEY, f"({entry_id}", "+")
    return sum(len(rows) for _id, fields in entries for rows in (decode_record(fields) or {}).values())


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_mixed_batches_are_all_or_nothing(web_only):
    client = web_only.http(timeout=120)
    redis_client = web_only.redis()
    outcomes: Counter = Counter()

    @settings(max_examples=MIXED_EXAMPLES, **_HYPOTHESIS)
    @given(case=mixed_batches())
    def check(case: Case) -> None:
        before = _last_entry_id(redis_client)
        answer = _send(client, case)
        assert answer.status < 500, f"{answer.status} {answer.body[:500]!r}"
        written = _readings_after(redis_client, before)
        if case.valid:
            outcomes["accepted"] += 1
            assert answer.status == 202, answer.body[:500]
            assert answer.json()["accepted"] == case.items
            assert written == case.items
            assert _latest_keys(redis_client, case) == len({d for _, d in case.device_ids})
        else:
            outcomes["refused"] += 1
            assert answer.status == 400, answer.body[:500]
            assert written == 0, "a refused batch wrote to the stream"
            assert _latest_keys(redis_client, case) == 0, "a refused batch wrote latest state"

    try:
        check()
    finally:
        client.close()
        redis_client.close()
        REPORT.add(SECTION, "mixed batches (accepted / refused)",
                   f"{outcomes['accepted']:,} / {outcomes['refused']:,}", "all or nothing")

"""Stream maintenance on the real Redis: trimming never drops an unacknowledged entry; reclaim."""

from __future__ import annotations

import dataclasses
import logging
import random
import time

import pytest

from common import metrics
from common.streams import CONSUMER_GROUP, STREAM_KEY
from tests.conftest import meter, minutes_ago
from workers import stream_maintenance
from workers.stream_maintenance import forget_idle_consumers, reclaim_stale_entries, trim_stream

KEY = "test:trim"


def fill(client, n, key=KEY) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(key, {"k": "m", "r": str(i)})
    return pipe.execute()


def read(client, consumer, count, group="g", key=KEY) -> list[str]:
    reply = client.xreadgroup(group, consumer, {key: ">"}, count=count)
    if not reply:
        return []
    entries = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
    return [entry_id for entry_id, _ in entries]


def pending_ids(client, group="g", key=KEY) -> set[str]:
    return {p["message_id"] for p in client.xpending_range(key, group, min="-", max="+", count=100_000)}


def present(client, key=KEY) -> set[str]:
    return {entry_id for entry_id, _ in client.xrange(key)}


@pytest.mark.parametrize("approximate", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_trimming_never_removes_a_pending_or_undelivered_entry(redis_client, seed, approximate):
    rng = random.Random(seed)
    ids = fill(redis_client, rng.randint(200, 1500))
    groups = ["g"] if seed % 2 else ["g", "h"]  # a second group must hold the trim back too
    must_keep: set[str] = set()
    for group in groups:
        redis_client.xgroup_create(KEY, group, id="0")
        delivered = []
        for consumer in ("a", "b", "c"):
            delivered += read(redis_client, consumer, rng.randint(0, len(ids) // 3), group)
        acked = [i for i in delivered if rng.random() < 0.9]
        if acked:
            redis_client.xack(KEY, group, *acked)
        must_keep |= pending_ids(redis_client, group)
        must_keep |= set(ids[len(delivered):])  # never delivered to this group
    before = present(redis_client)

    result = trim_stream(redis_client, KEY, approximate=approximate, limit=rng.choice([100, 100_000]))

    after = present(redis_client)
    assert must_keep <= after
    assert before - after == {i for i in ids if i not in after}
    assert result["evicted"] == len(before) - len(after)
    if not approximate and must_keep:
        # Exact trimming keeps exactly the entries from the oldest one that must stay.
        assert after == {i for i in ids if _id_key(i) >= min(map(_id_key, must_keep))}


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def test_with_nothing_pending_everything_delivered_goes(redis_client, caplog):
    caplog.set_level(logging.INFO)
    ids = fill(redis_client, 500)
    redis_client.xgroup_create(KEY, "g", id="0")
    delivered = read(redis_client, "a", 300)
    redis_client.xack(KEY, "g", *delivered)
    assert redis_client.xpending(KEY, "g")["pending"] == 0

    result = trim_stream(redis_client, KEY, approximate=False)

    assert present(redis_client) == set(ids[300:])
    assert result["evicted"] == 300
    assert result["min_id"] == ids[299].split("-")[0] + "-" + str(int(ids[299].split("-")[1]) + 1)
    # The group's lag stays computable, which backpressure relies on.
    [info] = redis_client.xinfo_groups(KEY)
    assert info["lag"] == 200


def test_a_stream_without_group_or_without_entries_is_left_alone(redis_client):
    assert trim_stream(redis_client, KEY) == {"evicted": 0, "min_id": None}
    fill(redis_client, 300)
    assert trim_stream(redis_client, KEY, approximate=False)["evicted"] == 0
    assert redis_client.xlen(KEY) == 300


def test_approximate_trimming_frees_whole_nodes_of_a_long_acknowledged_stream(redis_client):
    fill(redis_client, 5000)
    redis_client.xgroup_create(KEY, "g", id="0")
    redis_client.xack(KEY, "g", *read(redis_client, "a", 5000))
    result = trim_stream(redis_client, KEY, approximate=True, limit=1000)
    # Several calls of at most 1,000 each; whole macro nodes only, so a few may stay.
    assert result["evicted"] >= 4000
    assert redis_client.xlen(KEY) == 5000 - result["evicted"]
    assert int(redis_client.hget(metrics.COUNTERS_KEY, "stream_trimmed_entries")) == result["evicted"]


def test_trim_job_uses_the_telemetry_stream(settings, client, redis_client):
    from workers.drain import StreamDrainer

    for i in range(10):  # an entry each
        client.post("/v1/telemetry", json=meter(f"m{i}", ts=minutes_ago(1)))
    drainer = StreamDrainer(settings, redis_client, "trim-test")
    drainer.ensure_group()
    try:
        entries = drainer.read_new()
        drainer.ack([entry_id for entry_id, _ in entries[:4]])
    finally:
        drainer.close()
    trim_stream(redis_client, approximate=False)
    assert redis_client.xlen(STREAM_KEY) == 6
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 6


def wait_idle(redis_client, seconds, consumer):
    """Wait until every entry pending to ``consumer`` has been idle ``seconds``."""
    deadline = time.monotonic() + 30
    while True:
        rows = redis_client.xpending_range(STREAM_KEY, CONSUMER_GROUP, min="-", max="+", count=1000,
                                           consumername=consumer)
        if rows and min(r["time_since_delivered"] for r in rows) >= seconds * 1000:
            return
        assert time.monotonic() < deadline, "entries never became idle"
        time.sleep(0.05)


def test_reclaim_writes_a_dead_consumers_entries_and_acknowledges_them(settings, client, db, redis_client, caplog):
    from workers.drain import StreamDrainer

    caplog.set_level(logging.INFO)  # the log lines' fields must not clash with LogRecord's own
    for i in range(25):  # an entry each
        client.post("/v1/telemetry", json=meter(f"m{i}", ts=minutes_ago(1)))
    victim = StreamDrainer(settings, redis_client, "victim")
    victim.ensure_group()
    assert len(victim.read_new()) == 25  # read, then the victim "dies"
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 0

    wait_idle(redis_client, settings.reclaim_idle_seconds, "victim")
    result = reclaim_stale_entries(settings, redis_client)

    assert result["reclaimed"] == 25
    assert result["entries_acked"] == 25
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 25
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0
    assert int(redis_client.hget(metrics.COUNTERS_KEY, "reclaimed_entries")) == 25


def test_reclaim_leaves_entries_that_are_not_idle_yet(settings, client, db, redis_client):
    from workers.drain import StreamDrainer

    client.post("/v1/telemetry", json=meter("m1"))
    client.post("/v1/telemetry", json=meter("m2"))
    slow = dataclasses.replace(settings, reclaim_idle_seconds=3600)
    live = StreamDrainer(slow, redis_client, "live")
    live.ensure_group()
    live.read_new()
    assert reclaim_stale_entries(slow, redis_client)["reclaimed"] == 0
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 2


def test_reclaim_without_a_stream_does_nothing(settings, redis_client):
    assert reclaim_stale_entries(settings, redis_client)["reclaimed"] == 0


def test_idle_consumers_are_forgotten_only_when_they_hold_nothing(redis_client):
    fill(redis_client, 10, STREAM_KEY)
    redis_client.xgroup_create(STREAM_KEY, CONSUMER_GROUP, id="0")
    read(redis_client, "holder", 3, CONSUMER_GROUP, STREAM_KEY)
    done = read(redis_client, "finished", 3, CONSUMER_GROUP, STREAM_KEY)
    redis_client.xack(STREAM_KEY, CONSUMER_GROUP, *done)

    assert forget_idle_consumers(redis_client, idle_ms=3_600_000) == []
    assert forget_idle_consumers(redis_client, idle_ms=0) == ["finished"]
    names = {c["name"] for c in redis_client.xinfo_consumers(STREAM_KEY, CONSUMER_GROUP)}
    assert names == {"holder"}
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 3


def test_idle_consumer_cleanup_tolerates_a_missing_stream(redis_client):
    assert stream_maintenance.forget_idle_consumers(redis_client) == []

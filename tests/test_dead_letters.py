"""Dead letters: a poison entry ends there after N tries while the rest drain; list, replay, purge."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from common.streams import CONSUMER_GROUP, DEAD_LETTER_STREAM_KEY, STREAM_KEY
from tests.conftest import meter, vehicle
from tests.processes import ROOT
from workers import dead_letters
from workers.drain import StreamDrainer

POISON_ROW = "poison-1\t2000-01-01T00:00:00+00:00\t1.0\t230.0"  # no partition holds the year 2000


@pytest.fixture
def drainer(settings, redis_client):
    d = StreamDrainer(settings, redis_client, "dead-letter-test")
    d.ensure_group()
    yield d
    d.close()


def pending(redis_client) -> int:
    return redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"]


def drain_until(drainer, redis_client, condition, seconds=30.0):
    """Run the drain until ``condition()`` holds (poison entries need RECLAIM_IDLE_SECONDS between tries)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the drain did not reach the expected state in time"
        drainer.drain_once(block_ms=100)


def poison_then_dead_letter(client, drainer, redis_client):
    client.post("/v1/telemetry", json=[meter("good-1"), vehicle("good-v")])
    redis_client.xadd(STREAM_KEY, {"k": "m", "r": POISON_ROW})
    client.post("/v1/telemetry", json=meter("good-2"))
    drain_until(drainer, redis_client,
                lambda: redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 1 and pending(redis_client) == 0)


def run_cli(redis_client, *argv) -> tuple[int, str]:
    out = io.StringIO()
    code = dead_letters.main(list(argv), client=redis_client, out=out)
    return code, out.getvalue()


def test_poison_entry_is_dead_lettered_after_n_tries_while_the_rest_drain(settings, client, db, redis_client,
                                                                          drainer, caplog):
    caplog.set_level(logging.INFO)  # the log lines' fields must not clash with LogRecord's own
    poison_then_dead_letter(client, drainer, redis_client)
    assert db.execute("SELECT meter_id FROM meter_readings ORDER BY 1").fetchall() == [("good-1",), ("good-2",)]
    assert db.execute("SELECT vehicle_id FROM vehicle_readings").fetchall() == [("good-v",)]
    [(_dead_id, fields)] = redis_client.xrange(DEAD_LETTER_STREAM_KEY)
    assert set(fields) == {"id", "k", "r", "error", "failures", "failed_at"}
    assert fields["r"] == POISON_ROW
    assert int(fields["failures"]) == settings.dead_letter_after == drainer.totals.write_failures
    assert datetime.fromisoformat(fields["failed_at"]) > datetime.now(UTC) - timedelta(minutes=1)


def test_list_shows_each_dead_letter_with_its_reading_and_error(settings, client, db, redis_client, drainer):
    poison_then_dead_letter(client, drainer, redis_client)
    code, text = run_cli(redis_client, "list", "--json")
    assert code == 0
    [item] = [json.loads(line) for line in text.splitlines()]
    assert item["kind"] == "m"
    assert item["failures"] == settings.dead_letter_after
    assert item["reading"] == {"meterId": "poison-1", "timestamp": "2000-01-01T00:00:00+00:00",
                               "kwhConsumedAc": 1.0, "voltage": 230.0}
    assert "partition" in item["error"]
    code, text = run_cli(redis_client, "list")
    assert code == 0
    assert "poison-1" in text and "1 dead letter(s)" in text


def test_replay_puts_the_entry_back_and_it_lands_once_its_partition_exists(settings, client, db, redis_client,
                                                                           drainer):
    poison_then_dead_letter(client, drainer, redis_client)
    [(dead_id, _)] = redis_client.xrange(DEAD_LETTER_STREAM_KEY)
    # The operator fixes the cause (here: the missing partition), then replays.
    db.execute("SELECT create_daily_partitions('meter_readings', '2000-01-01', '2000-01-01')")
    try:
        code, text = run_cli(redis_client, "replay", dead_id)
        assert code == 0
        result = json.loads(text)
        assert [r["deadId"] for r in result["replayed"]] == [dead_id]
        assert redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 0
        drain_until(drainer, redis_client, lambda: db.execute(
            "SELECT count(*) FROM meter_readings WHERE meter_id = 'poison-1'").fetchone()[0] == 1)
        assert pending(redis_client) == 0
        assert redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 0
    finally:
        db.execute("DROP TABLE IF EXISTS meter_readings_20000101")


def test_replay_of_an_unknown_id_says_so(redis_client):
    code, text = run_cli(redis_client, "replay", "1-1")
    assert code == 1
    assert json.loads(text)["not_found"] == ["1-1"]


def test_purge_deletes_chosen_or_all_dead_letters(redis_client):
    ids = [redis_client.xadd(DEAD_LETTER_STREAM_KEY, {"id": f"{i}-0", "k": "m", "r": POISON_ROW, "error": "x",
                                                      "failures": 5, "failed_at": "2026-01-01T00:00:00+00:00"})
           for i in range(1, 4)]
    code, text = run_cli(redis_client, "purge", ids[0])
    assert (code, json.loads(text)) == (0, {"purged": 1})
    assert [i for i, _ in redis_client.xrange(DEAD_LETTER_STREAM_KEY)] == ids[1:]
    code, text = run_cli(redis_client, "purge", "--all")
    assert (code, json.loads(text)) == (0, {"purged": 2})
    assert redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 0


def test_replay_all_skips_malformed_records(redis_client):
    row = "v1\t2026-01-01T00:00:00+00:00\t1\t2\t3"
    good = redis_client.xadd(DEAD_LETTER_STREAM_KEY, {"id": "1-0", "k": "v", "r": row})
    bad = redis_client.xadd(DEAD_LETTER_STREAM_KEY, {"id": "2-0", "k": "?", "r": "", "error": "malformed"})
    code, text = run_cli(redis_client, "replay", "--all")
    result = json.loads(text)
    assert code == 0
    assert [r["deadId"] for r in result["replayed"]] == [good]
    assert result["skipped_malformed"] == [bad]
    [(_id, fields)] = redis_client.xrange(STREAM_KEY)
    assert fields == {"v": row}  # today's record format: the kind's rows


def test_cli_runs_as_a_module(settings, redis_client):
    redis_client.xadd(DEAD_LETTER_STREAM_KEY, {"id": "1-0", "k": "m", "r": POISON_ROW, "error": "boom",
                                               "failures": 5, "failed_at": "2026-01-01T00:00:00+00:00"})
    done = subprocess.run([sys.executable, "-m", "workers.dead_letters", "list", "--json"], cwd=ROOT,
                          env={"REDIS_URL": settings.redis_url, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["error"] == "boom"
    usage = subprocess.run([sys.executable, "-m", "workers.dead_letters", "replay"], cwd=ROOT,
                           env={"REDIS_URL": settings.redis_url, "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    assert "--all" in usage.stderr


def test_a_batch_entry_loses_only_its_poison_readings(settings, db, redis_client, drainer):
    from common.streams import METER, VEHICLE, encode_record

    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    meters = [f"bm-{i}\t{(ts - timedelta(seconds=i)).isoformat()}\t{i}.0\t230.0" for i in range(150)]
    vehicles = [f"bv-{i}\t{ts.isoformat()}\t50.0\t{i}.0\t20.0" for i in range(47)]
    poison = [f"pm-{i}\t2000-01-0{i + 1}T00:00:00+00:00\t1.0\t230.0" for i in range(3)]
    # One request's entry of 200 readings, three of which no partition can take, spread through it.
    rows = [*meters[:40], poison[0], *meters[40:120], poison[1], *meters[120:], poison[2]]
    redis_client.xadd(STREAM_KEY, encode_record({METER: rows, VEHICLE: vehicles}))
    drain_until(drainer, redis_client, lambda: drainer.drain_once(block_ms=50) is not None
                and not pending(redis_client) and redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 3)
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 150
    assert db.execute("SELECT count(*) FROM vehicle_readings").fetchone()[0] == 47
    dead = [fields for _id, fields in redis_client.xrange(DEAD_LETTER_STREAM_KEY)]
    assert sorted(f["r"] for f in dead) == sorted(poison)
    assert {f["k"] for f in dead} == {"m"}
    assert all("partition" in f["error"] and int(f["failures"]) == settings.dead_letter_after for f in dead)
    assert drainer.totals.dead_lettered == 3

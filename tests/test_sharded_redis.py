"""Ingest, drain, reclaim, trim, dead letters and latest reads on every Redis layout.

Each test runs against one Redis with one stream, one Redis with 8 shards, and a 3-master +
3-replica Redis Cluster with 8 shards (tests/conftest.py ALL_LAYOUTS).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time

import pytest

from common.streams import CONSUMER_GROUP, METER, VEHICLE, encode_record
from tests.conftest import ALL_LAYOUTS, keyed_client, meter, minutes_ago, vehicle
from workers import dead_letters
from workers.drain import StreamDrainer
from workers.stream_maintenance import reclaim_stale_entries, trim_streams

REDIS_LAYOUTS = ALL_LAYOUTS
POISON_ROW = "poison\t2000-01-01T00:00:00+00:00\t1.0\t230.0"


def entries_by_shard(redis_client, keys) -> dict[int, list]:
    return {shard: redis_client.xrange(keys.stream(shard)) for shard in range(keys.shards)}


def pending(redis_client, keys) -> int:
    total = 0
    for stream in keys.all_streams():
        if redis_client.exists(stream):
            total += redis_client.xpending(stream, CONSUMER_GROUP)["pending"]
    return total


def drain_everything(drainer, redis_client, keys, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        drainer.drain_once(block_ms=10)
        lag = sum(int(g["lag"] or 0) for s in keys.all_streams() if redis_client.exists(s)
                  for g in redis_client.xinfo_groups(s))
        if not lag and not pending(redis_client, keys):
            return
        assert time.monotonic() < deadline, "the streams did not drain"


@pytest.fixture
def drainer(settings, redis_client):
    d = StreamDrainer(settings, redis_client, "layout-test")
    d.ensure_group()
    yield d
    d.close()


def fleet(n=40):
    ts = minutes_ago(1)
    return ([meter(f"m-{i}", kwh=float(i), ts=ts) for i in range(n // 2)]
            + [vehicle(f"v-{i}", soc=float(i), ts=ts) for i in range(n // 2)])


def test_a_request_is_one_stream_entry_per_shard_it_touches(client, redis_client, redis_keys):
    readings = fleet()
    assert client.post("/v1/telemetry", json=readings).status_code == 202
    by_shard = entries_by_shard(redis_client, redis_keys)
    expected: dict[int, dict[str, set]] = {}
    for r in readings:
        kind, device = (METER, r["meterId"]) if "meterId" in r else (VEHICLE, r["vehicleId"])
        expected.setdefault(redis_keys.shard_of(kind, device), {}).setdefault(kind, set()).add(device)
    assert {s for s, entries in by_shard.items() if entries} == set(expected)
    for shard, entries in by_shard.items():
        if shard not in expected:
            continue
        [(_id, fields)] = entries  # one entry for the request in each shard it touches
        got = {kind: {row.split("\t")[0] for row in rows.split("\n")} for kind, rows in fields.items()}
        assert got == expected[shard]
        for kind, devices in expected[shard].items():
            for device in devices:
                assert redis_client.exists(redis_keys.latest(kind, device, shard))
    if redis_keys.shards > 1:
        assert len(expected) > 1  # 40 devices over 8 shards: the test spreads


def test_everything_accepted_drains_once_and_nothing_stays_pending(client, db, redis_client, redis_keys, drainer):
    readings = fleet()
    for _ in range(2):  # the same readings twice: history keeps them once
        assert client.post("/v1/telemetry", json=readings).status_code == 202
    drain_everything(drainer, redis_client, redis_keys)
    assert db.execute("SELECT count(*), count(DISTINCT meter_id) FROM meter_readings").fetchone() == (20, 20)
    assert db.execute("SELECT count(*), count(DISTINCT vehicle_id) FROM vehicle_readings").fetchone() == (20, 20)
    assert drainer.totals.duplicates_skipped == 40
    assert pending(redis_client, redis_keys) == 0


def test_latest_reads_single_and_many_keep_the_order_asked(client, redis_client, redis_keys):
    assert client.post("/v1/telemetry", json=fleet()).status_code == 202
    newer = minutes_ago(0.5)
    older = minutes_ago(3)
    client.post("/v1/telemetry", json=[vehicle("v-3", soc=99.0, ts=newer), vehicle("v-4", soc=1.0, ts=older)])
    assert client.get("/v1/vehicles/v-3/latest").get_json()["soc"] == 99.0
    assert client.get("/v1/vehicles/v-4/latest").get_json()["soc"] == 4.0  # an older reading moves nothing
    asked = ["v-7", "v-404", "v-1", "v-3", "v-12", "v-nope"]
    body = client.get("/v1/vehicles/latest?ids=" + ",".join(asked)).get_json()
    assert [v["vehicleId"] for v in body["vehicles"]] == ["v-7", "v-1", "v-3", "v-12"]
    assert body["missing"] == ["v-404", "v-nope"]
    posted = client.post("/v1/meters/latest", json={"ids": [f"m-{i}" for i in reversed(range(20))]}).get_json()
    assert [m["meterId"] for m in posted["meters"]] == [f"m-{i}" for i in reversed(range(20))]


def test_lost_hashes_are_refilled_from_postgres_in_their_shards(client, db, redis_client, redis_keys, drainer):
    assert client.post("/v1/telemetry", json=fleet()).status_code == 202
    drain_everything(drainer, redis_client, redis_keys)
    for i in range(20):
        redis_client.delete(redis_keys.latest(VEHICLE, f"v-{i}"))
    body = client.get("/v1/vehicles/latest?ids=" + ",".join(f"v-{i}" for i in range(20))).get_json()
    assert [v["soc"] for v in body["vehicles"]] == [float(i) for i in range(20)]
    assert all(redis_client.exists(redis_keys.latest(VEHICLE, f"v-{i}")) for i in range(20))


def test_silent_devices_merge_every_shard_in_time_then_id_order(client, redis_client, redis_keys):
    # 20 vehicles silent for 20 to 39 minutes (two share each minute), 5 that just reported.
    silent = [vehicle(f"v-{i:02d}", ts=minutes_ago(20 + i // 2)) for i in range(20)]
    alive = [vehicle(f"v-live-{i}", ts=minutes_ago(0.5)) for i in range(5)]
    assert client.post("/v1/telemetry", json=silent + alive).status_code == 202
    # A late, older reading of a live vehicle does not make it look silent, nor a silent one alive.
    assert client.post("/v1/telemetry", json=[vehicle("v-live-0", ts=minutes_ago(50))]).status_code == 202
    if redis_keys.shards > 1:
        assert sum(1 for key in redis_keys.all_newest(VEHICLE) if redis_client.exists(key)) > 1
    pages, cursor = [], None
    while True:
        query = {"kind": "vehicle", "for": "15m", "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/devices/silent", query_string=query).get_json()
        pages.append([d["id"] for d in body["devices"]])
        cursor = body["next"]
        if cursor is None:
            break
    got = [device for page in pages for device in page]
    oldest_first = sorted(silent, key=lambda r: (r["timestamp"], r["vehicleId"]))
    assert got == [r["vehicleId"] for r in oldest_first]
    assert all(len(page) == 3 for page in pages[:-1])
    metrics_text = client.get("/metrics").get_data(as_text=True)
    assert 'energy_devices_silent{kind="vehicle"} 20.0' in metrics_text


def test_a_refill_brings_back_the_newest_reading_sets(client, db, redis_client, redis_keys, drainer):
    quiet = [vehicle(f"v-{i}", ts=minutes_ago(30)) for i in range(10)]
    assert client.post("/v1/telemetry", json=quiet).status_code == 202
    drain_everything(drainer, redis_client, redis_keys)
    for i in range(10):  # Redis lost its data
        redis_client.delete(redis_keys.latest(VEHICLE, f"v-{i}"))
    for key in redis_keys.all_newest(VEHICLE):
        redis_client.delete(key)
    body = client.get("/v1/vehicles/latest?ids=" + ",".join(f"v-{i}" for i in range(10))).get_json()
    assert len(body["vehicles"]) == 10  # read from Postgres, refilled into Redis
    silent = client.get("/v1/devices/silent?kind=vehicle&for=15m").get_json()["devices"]
    assert sorted(d["id"] for d in silent) == sorted(f"v-{i}" for i in range(10))


def test_a_dead_consumers_entries_are_reclaimed_in_every_shard(settings, client, db, redis_client, redis_keys):
    for i in range(10):
        assert client.post("/v1/telemetry", json=[meter(f"m-{i}-{j}") for j in range(10)]).status_code == 202
    victim = StreamDrainer(settings, redis_client, "victim")
    victim.ensure_group()
    read = sum(len(victim.read_new(shard)) for shard in range(redis_keys.shards))  # then the victim "dies"
    assert read == pending(redis_client, redis_keys) > 0
    deadline = time.monotonic() + 30
    while pending(redis_client, redis_keys):
        assert time.monotonic() < deadline, "entries never became idle"
        reclaim_stale_entries(settings, redis_client)
        time.sleep(0.1)
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == 100


def test_trim_empties_every_shard_of_what_is_acknowledged(client, redis_client, redis_keys, drainer):
    assert client.post("/v1/telemetry", json=fleet()).status_code == 202
    drain_everything(drainer, redis_client, redis_keys)
    entries = sum(len(e) for e in entries_by_shard(redis_client, redis_keys).values())
    assert trim_streams(redis_client, redis_keys, approximate=False)["evicted"] == entries
    assert all(redis_client.xlen(s) == 0 for s in redis_keys.all_streams())


def test_a_poison_reading_is_dead_lettered_alone_and_the_rest_of_its_entry_written(
        settings, db, redis_client, redis_keys, drainer):
    ts = minutes_ago(1).isoformat()
    shard = redis_keys.shard_of(METER, "good-1")
    rows = [f"good-1\t{ts}\t1.0\t230.0", POISON_ROW, f"good-1\t{minutes_ago(2).isoformat()}\t0.5\t230.0"]
    redis_client.xadd(redis_keys.stream(shard), encode_record({METER: rows}))
    deadline = time.monotonic() + 30
    while pending(redis_client, redis_keys) or not redis_client.xlen(redis_keys.dead_letters(shard)):
        assert time.monotonic() < deadline, "the poison reading was never dead-lettered"
        drainer.drain_once(block_ms=50)
    assert db.execute("SELECT count(*) FROM meter_readings WHERE meter_id = 'good-1'").fetchone()[0] == 2
    [(_dead_id, fields)] = redis_client.xrange(redis_keys.dead_letters(shard))
    assert (fields["k"], fields["r"], int(fields["failures"])) == ("m", POISON_ROW, settings.dead_letter_after)
    assert "partition" in fields["error"]
    assert not redis_client.exists(redis_keys.failures(shard))

    out = io.StringIO()
    assert dead_letters.main(["list", "--json"], client=redis_client, out=out, keys=redis_keys) == 0
    [listed] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert listed["reading"]["meterId"] == "poison"
    out = io.StringIO()
    assert dead_letters.main(["replay", listed["deadId"]], client=redis_client, out=out, keys=redis_keys) == 0
    assert redis_client.xlen(redis_keys.dead_letters(shard)) == 0
    assert redis_client.xrange(redis_keys.stream(shard))[-1][1] == {"m": POISON_ROW}


def test_metrics_and_backpressure_sum_over_the_shards(settings, client, redis_client, redis_keys, drainer):
    assert client.post("/v1/telemetry", json=fleet()).status_code == 202
    entries = sum(len(e) for e in entries_by_shard(redis_client, redis_keys).values())
    text = client.get("/metrics").get_data(as_text=True)
    assert f"energy_stream_backlog {float(entries)}" in text
    assert f"energy_stream_length {float(entries)}" in text

    from web import create_app

    app = create_app(settings.__class__(**{**settings.__dict__, "backlog_limit": entries - 1,
                                           "backpressure_check_ms": 0}))
    refused = keyed_client(app, client.environ_base["HTTP_AUTHORIZATION"].split(" ", 1)[1]).post(
        "/v1/telemetry", json=meter("m-late"))
    assert refused.status_code == 503
    assert refused.get_json()["backlog"] == entries


def test_the_oldest_unwritten_entry_is_found_in_every_shard(client, redis_client, redis_keys):
    """What the rollups' DrainFirst asks: the older of the oldest pending and the first undelivered entry."""
    from common.metrics import entry_id_millis, oldest_unwritten_millis

    assert oldest_unwritten_millis(redis_client, redis_keys) is None
    assert client.post("/v1/telemetry", json=fleet()).status_code == 202
    by_shard = entries_by_shard(redis_client, redis_keys)
    first = min(entry_id_millis(entries[0][0]) for entries in by_shard.values() if entries)
    assert oldest_unwritten_millis(redis_client, redis_keys) == first  # no group yet: all undelivered
    shards = [shard for shard, entries in by_shard.items() if entries]
    for shard in shards:
        redis_client.xgroup_create(redis_keys.stream(shard), CONSUMER_GROUP, id="0")
    assert oldest_unwritten_millis(redis_client, redis_keys) == first
    # Delivered but not acknowledged: still unwritten.
    for shard in shards:
        redis_client.xreadgroup(CONSUMER_GROUP, "c1", {redis_keys.stream(shard): ">"})
    assert oldest_unwritten_millis(redis_client, redis_keys) == first
    for shard in shards:
        redis_client.xack(redis_keys.stream(shard), CONSUMER_GROUP, *[e[0] for e in by_shard[shard]])
    assert oldest_unwritten_millis(redis_client, redis_keys) is None


def test_a_device_keys_rate_limit_holds_on_every_layout(client, auth, redis_client):
    token = auth.create_key(device="vehicle:v-limited", rate_limit="3/minute")
    device = client.application.test_client()
    codes = [device.post("/v1/telemetry", json=vehicle("v-limited"), headers=auth.headers(token)).status_code
             for _ in range(5)]
    assert codes == [202, 202, 202, 429, 429]


def test_too_few_replicas_confirming_is_a_503_that_says_the_request_may_be_partly_stored(
        settings, redis_client, admin_token):
    from web import create_app

    # No layout here has two replicas per master (the single Redis has none): WAIT cannot confirm.
    app = create_app(dataclasses.replace(settings, redis_min_replicas_ack=2, redis_wait_timeout_ms=50))
    response = keyed_client(app, admin_token).post("/v1/telemetry", json=fleet(8))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    body = response.get_json()
    assert (body["error"], body["partlyStored"]) == ("replicas_unconfirmed", True)
    assert "Resend" in body["message"]


def test_one_replica_confirming_is_accepted_on_the_cluster(settings, redis_client, redis_keys, admin_token):
    if not settings.redis_cluster_url:
        pytest.skip("only the cluster has replicas")
    from web import create_app

    app = create_app(dataclasses.replace(settings, redis_min_replicas_ack=1, redis_wait_timeout_ms=2000))
    assert keyed_client(app, admin_token).post("/v1/telemetry", json=fleet()).status_code == 202
    assert sum(len(e) for e in entries_by_shard(redis_client, redis_keys).values()) > 1


def test_a_redis_that_forgot_its_scripts_still_takes_each_shard_once(settings, client, redis_client, redis_keys):
    # As a promoted replica would: scripts are not replicated.
    if settings.redis_cluster_url:
        for node in redis_client.get_primaries():
            redis_client.get_redis_connection(node).script_flush()
    else:
        redis_client.script_flush()
    assert client.post("/v1/telemetry", json=fleet()).status_code == 202
    assert all(len(entries) <= 1 for entries in entries_by_shard(redis_client, redis_keys).values())
    if settings.redis_cluster_url:
        for node in redis_client.get_primaries():
            redis_client.get_redis_connection(node).script_flush()
    body = client.get("/v1/meters/latest?ids=m-1,m-2,m-19").get_json()
    assert [m["meterId"] for m in body["meters"]] == ["m-1", "m-2", "m-19"]

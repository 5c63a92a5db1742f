"""Shard assignment and the key layout: stable across processes and versions, one slot per shard."""

from __future__ import annotations

import subprocess
import sys
import zlib

import pytest
from redis.crc import key_slot

from common.streams import (
    GET_MANY_LUA,
    INGEST_LUA,
    METER,
    REFILL_LUA,
    SINGLE,
    VEHICLE,
    KeySpace,
    decode_record,
    encode_record,
    shard_of,
)

# Written once from the rule (CRC-32 of "<kind name>:<id>", modulo the shard count) and never
# regenerated: a change here moves devices between shards, which needs a migration (docs/scaling.md).
FIXED = [
    # kind, id, shard of 8, of 3, of 256
    (METER, "meter-1", 0, 0, 0),
    (METER, "m-000017", 1, 1, 113),
    (VEHICLE, "vehicle-1", 0, 2, 96),
    (VEHICLE, "ev-17", 3, 0, 107),
    (VEHICLE, "V.a:b_c-9", 5, 1, 141),
    (METER, "0", 7, 1, 103),
]


def test_crc32_is_the_standard_one():
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value


@pytest.mark.parametrize(("kind", "device_id", "of8", "of3", "of256"), FIXED)
def test_shard_assignment_is_a_fixed_table(kind, device_id, of8, of3, of256):
    assert (shard_of(kind, device_id, 8), shard_of(kind, device_id, 3), shard_of(kind, device_id, 256)) == (
        of8, of3, of256)
    assert shard_of(kind, device_id, 1) == 0


def test_another_process_assigns_the_same_shards():
    # A fresh interpreter has another hash seed: Python's hash() would differ, CRC-32 does not.
    code = ("from common.streams import shard_of; "
            f"print([shard_of(k, i, 8) for k, i, *_ in {[(k, i) for k, i, *_ in FIXED]!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=".")
    assert done.stdout.strip() == str([row[2] for row in FIXED])


def test_a_fleet_spreads_evenly_over_the_shards():
    for kind in (METER, VEHICLE):
        counts = [0] * 8
        for i in range(10_000):
            counts[shard_of(kind, f"{kind}-{i:06d}", 8)] += 1
        assert max(counts) < 1.1 * 10_000 / 8 and min(counts) > 0.9 * 10_000 / 8, counts


def test_one_shard_on_one_redis_keeps_the_key_names_of_before():
    assert (SINGLE.stream(0), SINGLE.dead_letters(0), SINGLE.failures(0)) == (
        "telemetry:stream", "telemetry:dead", "telemetry:failures")
    assert SINGLE.latest(METER, "m-1") == "latest:meter:m-1"
    assert SINGLE.latest(VEHICLE, "v-1") == "latest:vehicle:v-1"


def test_sharded_keys_carry_their_shard_as_a_hash_tag_so_a_shard_is_one_slot():
    keys = KeySpace(8)
    assert keys.stream(7) == "telemetry:{s7}:stream"
    assert keys.dead_letters(3) == "telemetry:{s3}:dead"
    for kind, device_id, of8, *_ in FIXED:
        key = keys.latest(kind, device_id)
        assert key.startswith(f"latest:{{s{of8}}}:")
        assert key_slot(key.encode()) == key_slot(keys.stream(of8).encode()) == key_slot(
            keys.failures(of8).encode()) == key_slot(keys.dead_letters(of8).encode())
    # A cluster with one shard still tags its keys (a script's keys must share a slot).
    assert KeySpace(1, tagged=True).latest(METER, "m") == "latest:{s0}:meter:m"
    with pytest.raises(ValueError):
        keys.stream(8)


def test_a_record_holds_the_rows_of_each_kind():
    fields = encode_record({METER: ["m1\tts\t1.0\t2.0", "m2\tts\t1.0\t2.0"], VEHICLE: []})
    assert fields == {"m": "m1\tts\t1.0\t2.0\nm2\tts\t1.0\t2.0"}
    assert decode_record(fields) == {METER: ["m1\tts\t1.0\t2.0", "m2\tts\t1.0\t2.0"]}
    # The one-reading records of before are read too.
    assert decode_record({"k": "v", "r": "v1\tts\t1\t2\t3"}) == {VEHICLE: ["v1\tts\t1\t2\t3"]}
    for malformed in ({}, {"k": "x", "r": "row"}, {"k": "m"}, {"m": ""}, {"x": "y"}, {"m": "row", "extra": "1"}):
        assert decode_record(malformed) is None


def test_the_scripts_write_the_answer_and_its_time_only():
    for field in ("json", "_ts", "timestamp"):  # timestamp: how they recognise a hash of the older layout
        assert f"'{field}'" in INGEST_LUA and f"'{field}'" in REFILL_LUA
    for field in ("kwhConsumedAc", "voltage", "soc", "kwhDeliveredDc", "batteryTemp"):
        assert f"'{field}'" not in INGEST_LUA and f"'{field}'" not in REFILL_LUA
    assert "HGET" in GET_MANY_LUA

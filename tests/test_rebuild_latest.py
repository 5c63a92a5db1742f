"""`flask --app web rebuild-latest`: rebuild the Redis latest state from Postgres after Redis lost its data."""

import json

from common.streams import CONSUMER_GROUP, METER, STREAM_KEY, VEHICLE, latest_key
from tests.conftest import meter, minutes_ago, reset_redis_db, stored_answer, vehicle
from workers.drain import StreamDrainer


def rebuild(app, *args):
    result = app.test_cli_runner().invoke(args=["rebuild-latest", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_rebuild_after_redis_lost_its_data(app, client, settings, redis_client):
    readings = [meter(f"m{i}", kwh=float(i), ts=minutes_ago(3)) for i in range(7)]
    readings += [vehicle(f"v{i}", soc=float(i), ts=minutes_ago(2)) for i in range(5)]
    readings += [vehicle("v0", soc=99.0, ts=minutes_ago(1))]  # the newest of v0
    assert client.post("/v1/telemetry", json=readings).status_code == 202
    drainer = StreamDrainer(settings, redis_client, "rebuild-test")
    drainer.ensure_group()
    try:
        while drainer.drain_once(block_ms=10) or redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"]:
            pass
    finally:
        drainer.close()
    before = {key: redis_client.hgetall(key) for key in redis_client.scan_iter("latest:*")}
    assert len(before) == 12

    reset_redis_db(redis_client)
    assert client.get("/v1/vehicles/latest?ids=v0").get_json()["vehicles"][0]["soc"] == 99.0  # read fallback
    reset_redis_db(redis_client)

    assert rebuild(app, "--batch-size", "3") == {"meters": {"read": 7, "moved": 7},
                                                 "vehicles": {"read": 5, "moved": 5}}
    after = {key: redis_client.hgetall(key) for key in redis_client.scan_iter("latest:*")}
    assert after == before  # the same hashes, field for field, as ingest wrote them
    assert all(set(fields) == {"_ts", "json"} for fields in after.values())


def test_rebuild_never_moves_a_hash_backwards(app, client, db, redis_client):
    db.execute("INSERT INTO vehicle_latest (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp) VALUES"
               " ('v1', %s, 10, 1, 20), ('v2', %s, 20, 2, 20)", (minutes_ago(30), minutes_ago(30)))
    db.execute("INSERT INTO meter_latest (meter_id, ts, kwh_consumed_ac, voltage) VALUES ('m1', %s, 5, 230)",
               (minutes_ago(30),))
    client.post("/v1/telemetry", json=vehicle("v1", soc=80.0, ts=minutes_ago(1)))  # newer than Postgres
    assert rebuild(app) == {"meters": {"read": 1, "moved": 1}, "vehicles": {"read": 2, "moved": 1}}
    assert stored_answer(redis_client, latest_key(VEHICLE, "v1"))["soc"] == 80.0
    assert stored_answer(redis_client, latest_key(VEHICLE, "v2"))["soc"] == 20.0
    assert stored_answer(redis_client, latest_key(METER, "m1"))["kwhConsumedAc"] == 5.0
    # Running it again changes nothing.
    assert rebuild(app) == {"meters": {"read": 1, "moved": 0}, "vehicles": {"read": 2, "moved": 0}}


def test_rebuild_of_an_empty_database(app, db):
    assert rebuild(app) == {"meters": {"read": 0, "moved": 0}, "vehicles": {"read": 0, "moved": 0}}

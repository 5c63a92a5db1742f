"""Dashboard reads on the real services: Redis first, Postgres *_latest on a miss with a refill, errors."""

import json
from datetime import timedelta

import pytest

from common.settings import Settings
from common.streams import METER, VEHICLE, Reading, epoch_micros, latest_key
from tests.conftest import RedisRoundTrips, iso, keyed_client, meter, minutes_ago, stored_answer, vehicle
from web import create_app
from web import db as web_db


def put_vehicle_latest(db, vehicle_id, ts, soc=50.0, kwh=8.0, temp=30.0):
    db.execute("INSERT INTO vehicle_latest (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp)"
               " VALUES (%s, %s, %s, %s, %s)", (vehicle_id, ts, soc, kwh, temp))


def put_meter_latest(db, meter_id, ts, kwh=10.0, voltage=230.0):
    db.execute("INSERT INTO meter_latest (meter_id, ts, kwh_consumed_ac, voltage) VALUES (%s, %s, %s, %s)",
               (meter_id, ts, kwh, voltage))


# -- single reads ------------------------------------------------------------------------------------------------


def test_vehicle_latest_comes_from_redis(client):
    ts = minutes_ago(2)
    client.post("/v1/telemetry", json=vehicle("v1", soc=61.5, kwh=12.25, temp=28.0, ts=ts))
    r = client.get("/v1/vehicles/v1/latest")
    assert r.status_code == 200
    assert r.get_json() == {"vehicleId": "v1", "soc": 61.5, "kwhDeliveredDc": 12.25, "batteryTemp": 28.0,
                            "timestamp": iso(ts)}


def test_a_redis_miss_falls_back_to_postgres_and_refills_redis(client, db, redis_client):
    ts = minutes_ago(30)
    put_vehicle_latest(db, "v1", ts, soc=77.0, kwh=3.5, temp=21.5)
    r = client.get("/v1/vehicles/v1/latest")
    assert r.status_code == 200
    assert r.get_json() == {"vehicleId": "v1", "soc": 77.0, "kwhDeliveredDc": 3.5, "batteryTemp": 21.5,
                            "timestamp": iso(ts)}
    # The hash now has exactly the fields ingest writes, so the next read is a Redis hit.
    assert redis_client.hgetall(latest_key(VEHICLE, "v1")) == {"_ts": str(epoch_micros(ts)),
                                                               "json": r.get_data(as_text=True)}
    db.execute("DELETE FROM vehicle_latest")
    assert client.get("/v1/vehicles/v1/latest").get_json()["soc"] == 77.0


def test_meter_fallback_and_refill(client, db, redis_client):
    ts = minutes_ago(30)
    put_meter_latest(db, "m1", ts, kwh=1234.5, voltage=229.5)
    body = client.get("/v1/meters/m1/latest").get_json()
    assert body == {"meterId": "m1", "kwhConsumedAc": 1234.5, "voltage": 229.5, "timestamp": iso(ts)}
    assert stored_answer(redis_client, latest_key(METER, "m1"))["voltage"] == 229.5


def test_unknown_device_is_404_in_both_stores(client, db):
    for path in ("/v1/vehicles/nobody/latest", "/v1/meters/nobody/latest"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.get_json()["error"] == "not_found"


def test_redis_is_preferred_over_an_older_postgres_row(client, db):
    put_vehicle_latest(db, "v1", minutes_ago(30), soc=10.0)
    client.post("/v1/telemetry", json=vehicle("v1", soc=90.0, ts=minutes_ago(1)))
    assert client.get("/v1/vehicles/v1/latest").get_json()["soc"] == 90.0


def test_a_refill_never_overwrites_a_newer_reading(app, redis_client):
    store = app.extensions["latest_state"]
    newer, older = minutes_ago(1), minutes_ago(5)
    store.append([Reading(VEHICLE, "v1", newer, (90.0, 9.0, 30.0))])
    assert store.refill([Reading(VEHICLE, "v1", older, (10.0, 1.0, 20.0))]) == 0
    assert store.refill([Reading(VEHICLE, "v1", newer, (11.0, 1.0, 20.0))]) == 0  # equal time: unchanged too
    assert json.loads(store.get(VEHICLE, "v1"))["soc"] == 90.0
    assert store.refill([Reading(VEHICLE, "v1", newer + timedelta(microseconds=1), (91.0, 9.5, 31.0))]) == 1
    assert json.loads(store.get(VEHICLE, "v1"))["soc"] == 91.0


def test_a_hash_written_before_the_json_field_gets_it_from_a_refill(app, client, db, redis_client):
    ts = minutes_ago(3)
    key = latest_key(VEHICLE, "old")
    redis_client.hset(key, mapping={"_ts": str(epoch_micros(ts)), "timestamp": iso(ts), "soc": "5.0",
                                    "kwhDeliveredDc": "1.0", "batteryTemp": "20.0"})
    put_vehicle_latest(db, "old", ts, soc=5.0, kwh=1.0, temp=20.0)
    assert client.get("/v1/vehicles/old/latest").get_json()["soc"] == 5.0  # from Postgres, refilled
    assert json.loads(redis_client.hget(key, "json"))["soc"] == 5.0
    assert set(redis_client.hgetall(key)) == {"_ts", "json"}  # in today's layout: the old fields are gone
    body = client.get("/v1/vehicles/latest?ids=old").get_json()
    assert body == {"vehicles": [{"vehicleId": "old", "soc": 5.0, "kwhDeliveredDc": 1.0, "batteryTemp": 20.0,
                                  "timestamp": iso(ts)}], "missing": []}


def test_a_hash_of_the_field_per_value_layout_is_replaced_whole_when_it_moves(client, redis_client):
    # Before the hashes held only _ts and json, they also held the timestamp and a field per value.
    old, new = minutes_ago(5), minutes_ago(1)
    key = latest_key(VEHICLE, "legacy")
    redis_client.hset(key, mapping={"_ts": str(epoch_micros(old)), "timestamp": iso(old), "soc": "5.0",
                                    "kwhDeliveredDc": "1.0", "batteryTemp": "20.0", "json": "{}"})
    assert client.post("/v1/telemetry", json=vehicle("legacy", ts=minutes_ago(10))).status_code == 202
    assert redis_client.hget(key, "soc") == "5.0"  # an older reading: the hash does not move
    assert client.post("/v1/telemetry", json=vehicle("legacy", soc=66.0, ts=new)).status_code == 202
    assert set(redis_client.hgetall(key)) == {"_ts", "json"}
    assert stored_answer(redis_client, key)["soc"] == 66.0
    assert redis_client.ttl(key) > 0


@pytest.mark.parametrize("value", [1e-05, 1e11, 0.1, -0.0, 123456.789, 2.5e-300])
def test_stored_answers_are_json_that_reads_back_the_same_numbers(client, value):
    ts = minutes_ago(1)
    r = client.post("/v1/telemetry", json=meter("m1", kwh=abs(value), ts=ts))
    assert r.status_code == 202, r.get_json()
    one = client.get("/v1/meters/m1/latest")
    assert one.mimetype == "application/json"
    assert json.loads(one.get_data(as_text=True))["kwhConsumedAc"] == abs(value)
    many = json.loads(client.get("/v1/meters/latest?ids=m1").get_data(as_text=True))
    assert many["meters"][0]["kwhConsumedAc"] == abs(value)


def test_ingest_after_a_refill_still_moves_forward_only(client, db):
    put_vehicle_latest(db, "v1", minutes_ago(10), soc=40.0)
    client.get("/v1/vehicles/v1/latest")  # refills Redis from Postgres
    client.post("/v1/telemetry", json=vehicle("v1", soc=20.0, ts=minutes_ago(20)))  # older: history only
    assert client.get("/v1/vehicles/v1/latest").get_json()["soc"] == 40.0
    client.post("/v1/telemetry", json=vehicle("v1", soc=45.0, ts=minutes_ago(5)))
    assert client.get("/v1/vehicles/v1/latest").get_json()["soc"] == 45.0


@pytest.mark.parametrize("path", ["/v1/vehicles/bad%20id/latest", "/v1/meters/" + "m" * 65 + "/latest"])
def test_bad_id_is_400_naming_it(client, path):
    r = client.get(path)
    assert r.status_code == 400
    assert r.get_json()["parameter"] == ("vehicleId" if "vehicles" in path else "meterId")


# -- multi-reads -------------------------------------------------------------------------------------------------


def test_multi_read_in_order_with_missing_ids(client, db, redis_client):
    t1, t2 = minutes_ago(2), minutes_ago(40)
    client.post("/v1/telemetry", json=[vehicle("a", soc=1.0, ts=t1), vehicle("c", soc=3.0, ts=t1)])
    put_vehicle_latest(db, "b", t2, soc=2.0)  # only in Postgres
    r = client.get("/v1/vehicles/latest?ids=c,nobody,a,b,c")
    assert r.status_code == 200
    body = r.get_json()
    assert [v["vehicleId"] for v in body["vehicles"]] == ["c", "a", "b"]
    assert [v["soc"] for v in body["vehicles"]] == [3.0, 1.0, 2.0]
    assert body["vehicles"][2]["timestamp"] == iso(t2)
    assert body["missing"] == ["nobody"]
    assert stored_answer(redis_client, latest_key(VEHICLE, "b"))["soc"] == 2.0  # refilled


def test_meters_multi_read(client, db):
    client.post("/v1/telemetry", json=meter("m1", kwh=5.0))
    put_meter_latest(db, "m2", minutes_ago(30), kwh=6.0)
    body = client.get("/v1/meters/latest?ids=m1,m2,m3").get_json()
    assert [(m["meterId"], m["kwhConsumedAc"]) for m in body["meters"]] == [("m1", 5.0), ("m2", 6.0)]
    assert body["missing"] == ["m3"]


def test_a_thousand_vehicles_in_one_redis_round_trip(client, monkeypatch):
    ids = [f"vehicle-{i:04d}" for i in range(1000)]
    ts = minutes_ago(1)
    for start in range(0, 1000, 500):
        batch = [vehicle(v, soc=float(i % 100), ts=ts) for i, v in enumerate(ids[start:start + 500], start=start)]
        assert client.post("/v1/telemetry", json=batch).status_code == 202
    client.get("/v1/vehicles/latest?ids=vehicle-0000")  # warm the connection up
    trips = RedisRoundTrips(monkeypatch)
    r = client.get("/v1/vehicles/latest?ids=" + ",".join(ids))
    assert r.status_code == 200
    body = r.get_json()
    assert len(body["vehicles"]) == 1000
    assert body["missing"] == []
    assert body["vehicles"][999] == {"vehicleId": "vehicle-0999", "soc": 99.0, "kwhDeliveredDc": 8.0,
                                     "batteryTemp": 30.0, "timestamp": iso(ts)}
    assert trips.count == 2  # the read, and the key's rate-limit counter (web/rate_limit.py)
    # The same 1,000 ids in a POST body (a URL that long passes no 8190-byte request-line limit).
    trips = RedisRoundTrips(monkeypatch)
    posted = client.post("/v1/vehicles/latest", json={"ids": ids})
    assert posted.status_code == 200
    assert posted.get_json() == body
    assert trips.count == 2


@pytest.mark.parametrize(
    "body",
    [None, [], {"ids": []}, {"ids": "a,b"}, {"ids": ["a", 1]}, {"ids": ["a b"]}, {"ids": ["x"] * 1001}],
)
def test_a_bad_multi_read_body_is_400_naming_ids(client, body):
    for kind in ("vehicles", "meters"):
        r = client.post(f"/v1/{kind}/latest", json=body) if body is not None else client.post(
            f"/v1/{kind}/latest", data="{", content_type="application/json")
        assert r.status_code == 400
        assert r.get_json()["parameter"] == "ids"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("", "missing_parameter"),
        ("?ids=", "missing_parameter"),
        ("?ids=a,,b", "invalid_parameter"),
        ("?ids=a,b%20c", "invalid_parameter"),
        ("?ids=" + ",".join(f"v{i}" for i in range(1001)), "invalid_parameter"),
    ],
)
def test_bad_ids_are_400_naming_ids(client, query, error):
    for kind in ("vehicles", "meters"):
        r = client.get(f"/v1/{kind}/latest{query}")
        assert r.status_code == 400
        body = r.get_json()
        assert (body["error"], body["parameter"]) == (error, "ids")


def test_a_thousand_ids_with_repeats_are_allowed(client):
    r = client.get("/v1/vehicles/latest?ids=" + ",".join(["x"] * 1500 + [f"v{i}" for i in range(999)]))
    assert r.status_code == 200
    assert len(r.get_json()["missing"]) == 1000


# -- Postgres unreachable ----------------------------------------------------------------------------------------


@pytest.fixture
def app_without_postgres(settings, redis_client):
    """The app with a DATABASE_URL where nothing listens, and a short pool timeout."""
    application = create_app(Settings.from_env({"DATABASE_URL": "postgresql://127.0.0.1:9/energy",
                                                "REDIS_URL": settings.redis_url}))
    application.config.update(TESTING=True, DB_POOL_TIMEOUT=0.3, DB_CONNECT_TIMEOUT=1)
    yield application
    web_db.close_pools()


def test_a_redis_hit_needs_no_postgres(app_without_postgres, settings, admin_token):
    c = keyed_client(app_without_postgres, admin_token, cache_from=settings)
    c.post("/v1/telemetry", json=vehicle("v1", soc=33.0))
    assert c.get("/v1/vehicles/v1/latest").get_json()["soc"] == 33.0
    assert c.get("/v1/vehicles/latest?ids=v1").get_json()["missing"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/vehicles/v1/latest", None),
        ("get", "/v1/meters/m1/latest", None),
        ("get", "/v1/vehicles/latest?ids=v1,v2", None),
        ("get", "/v1/meters/latest?ids=m1", None),
        ("get", "/v1/analytics/performance/v1", None),
        ("get", "/v1/mappings/v1", None),
        ("get", "/v1/mappings?meterId=m1", None),
        ("post", "/v1/mappings", {"vehicleId": "v1", "meterId": "m1"}),
        ("delete", "/v1/mappings/v1", None),
    ],
)
def test_postgres_unreachable_is_503_json(app_without_postgres, method, path, body, settings, admin_token):
    r = getattr(keyed_client(app_without_postgres, admin_token, cache_from=settings), method)(path, json=body)
    assert r.status_code == 503
    assert r.get_json()["error"] == "database_unavailable"
    assert r.headers["Retry-After"]


def test_a_pool_timeout_is_503_json(app, settings, admin_token):
    app.config.update(DB_POOL_MAX_SIZE=1, DB_POOL_MIN_SIZE=1, DB_POOL_TIMEOUT=0.2)
    c = keyed_client(app, admin_token, cache_from=settings)
    try:
        with web_db.get_pool(app).connection():  # the pool's only connection is busy
            r = c.get("/v1/mappings/v1")
        assert r.status_code == 503
        assert r.get_json()["error"] == "database_unavailable"
        assert c.get("/v1/mappings/v1").status_code == 404  # free again: served
    finally:
        web_db.close_pools()


def test_an_id_with_a_trailing_newline_is_a_bad_parameter(client):
    r = client.get("/v1/vehicles/abc%0A/latest")
    assert r.status_code == 400
    assert r.get_json()["parameter"] == "vehicleId"


def _kill_pooled_backends(app, db) -> int:
    """Terminate the backend of each connection idle in the app's pool (only those); return how many."""
    pool = web_db.get_pool(app)
    connections = [pool.getconn() for _ in range(pool.get_stats()["pool_available"])]
    pids = [conn.info.backend_pid for conn in connections]
    for conn in connections:
        pool.putconn(conn)
    return sum(db.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] for pid in pids)


def test_a_connection_killed_while_idle_is_replaced_before_a_request_uses_it(app, db, settings, admin_token):
    app.config.update(DB_POOL_MAX_SIZE=1, DB_POOL_MIN_SIZE=1, DB_POOL_CHECK_IDLE_SECONDS=0.0)
    c = keyed_client(app, admin_token, cache_from=settings)
    try:
        assert c.get("/v1/mappings/v1").status_code == 404
        assert _kill_pooled_backends(app, db) == 1  # as a Postgres restart would
        assert c.get("/v1/mappings/v1").status_code == 404  # checked, found dead, replaced
    finally:
        web_db.close_pools()


def test_a_connection_used_a_moment_ago_is_lent_without_a_round_trip(app, db, settings, admin_token):
    app.config.update(DB_POOL_MAX_SIZE=1, DB_POOL_MIN_SIZE=1, DB_POOL_CHECK_IDLE_SECONDS=60.0)
    c = keyed_client(app, admin_token, cache_from=settings)
    try:
        assert c.get("/v1/mappings/v1").status_code == 404
        assert _kill_pooled_backends(app, db) == 1
        # Not checked (it just worked): this one request meets the dead connection and answers 503...
        r = c.get("/v1/mappings/v1")
        assert r.status_code == 503
        assert r.get_json()["error"] == "database_unavailable"
        # ...and the pool has dropped it: the next request gets a new one.
        assert c.get("/v1/mappings/v1").status_code == 404
    finally:
        web_db.close_pools()

"""The latest-state compare in Redis: newer wins, older and equal leave the state alone (fakeredis)."""

from datetime import timedelta

from tests.conftest import minutes_ago, vehicle


def latest(client, vehicle_id="vehicle-1"):
    return client.get(f"/v1/vehicles/{vehicle_id}/latest")


def test_first_reading_becomes_latest(fake_client):
    ts = minutes_ago(5)
    fake_client.post("/v1/telemetry", json=vehicle(soc=40, ts=ts))
    body = latest(fake_client).get_json()
    assert body["soc"] == 40.0
    assert body["vehicleId"] == "vehicle-1"
    assert body["timestamp"] == ts.isoformat()


def test_newer_reading_wins(fake_client):
    fake_client.post("/v1/telemetry", json=vehicle(soc=40, ts=minutes_ago(5)))
    fake_client.post("/v1/telemetry", json=vehicle(soc=41, ts=minutes_ago(4)))
    assert latest(fake_client).get_json()["soc"] == 41.0


def test_older_reading_does_not_move_latest_back(fake_client):
    fake_client.post("/v1/telemetry", json=vehicle(soc=41, ts=minutes_ago(4)))
    fake_client.post("/v1/telemetry", json=vehicle(soc=40, ts=minutes_ago(5)))
    assert latest(fake_client).get_json()["soc"] == 41.0


def test_equal_timestamp_does_not_replace(fake_client):
    ts = minutes_ago(4)
    fake_client.post("/v1/telemetry", json=vehicle(soc=41, ts=ts))
    fake_client.post("/v1/telemetry", json=vehicle(soc=99, ts=ts))
    assert latest(fake_client).get_json()["soc"] == 41.0


def test_sub_second_order_is_respected(fake_client):
    ts = minutes_ago(4)
    fake_client.post("/v1/telemetry", json=vehicle(soc=42, ts=ts + timedelta(microseconds=2)))
    fake_client.post("/v1/telemetry", json=vehicle(soc=41, ts=ts + timedelta(microseconds=1)))
    assert latest(fake_client).get_json()["soc"] == 42.0


def test_same_offset_different_zone_compares_by_instant(fake_client):
    ts = minutes_ago(10)
    later_in_other_zone = (ts + timedelta(minutes=1)).astimezone(__import__("datetime").timezone(timedelta(hours=-8)))
    fake_client.post("/v1/telemetry", json=vehicle(soc=10, ts=ts))
    fake_client.post("/v1/telemetry", json={**vehicle(soc=11), "timestamp": later_in_other_zone.isoformat()})
    assert latest(fake_client).get_json()["soc"] == 11.0


def test_in_one_batch_the_newest_wins_whatever_the_order(fake_client):
    batch = [vehicle(soc=s, ts=minutes_ago(m)) for s, m in [(30, 3), (33, 1), (31, 2)]]
    assert fake_client.post("/v1/telemetry", json=batch).status_code == 202
    assert latest(fake_client).get_json()["soc"] == 33.0


def test_meter_latest_has_seed_field_names(fake_client):
    fake_client.post("/v1/telemetry", json={"meterId": "m-9", "kwhConsumedAc": 5, "voltage": 231.5,
                                            "timestamp": minutes_ago(1).isoformat()})
    body = fake_client.get("/v1/meters/m-9/latest").get_json()
    assert set(body) == {"meterId", "kwhConsumedAc", "voltage", "timestamp"}
    assert body["voltage"] == 231.5


def test_unknown_device_is_404_json(fake_client):
    r = latest(fake_client, "nobody")
    assert r.status_code == 404
    assert r.get_json()["error"] == "not_found"

"""Every validation rule of POST /v1/telemetry, each with a passing and a failing case (fakeredis)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.streams import STREAM_KEY
from tests.conftest import iso, keyed_client, meter, minutes_ago, vehicle


def post(client, body):
    return client.post("/v1/telemetry", json=body)


def stream_length(app):
    return app.extensions["redis"].xlen(STREAM_KEY)


def test_one_meter_reading_is_accepted(fake_client):
    r = post(fake_client, meter())
    assert r.status_code == 202
    assert r.get_json() == {"accepted": 1, "meters": 1, "vehicles": 0}


def test_mixed_array_is_accepted_and_counted_by_kind(fake_app, fake_client):
    r = post(fake_client, [meter(), vehicle(), vehicle("vehicle-2")])
    assert r.status_code == 202
    assert r.get_json() == {"accepted": 3, "meters": 1, "vehicles": 2}
    assert stream_length(fake_app) == 1  # one stream entry per request


def test_unknown_extra_fields_are_ignored(fake_client):
    assert post(fake_client, meter(firmware="1.2", nested={"a": 1})).status_code == 202


# (field, good value, bad value, kind) -- the good value must be accepted, the bad one named in a 400.
RULES = [
    ("meterId", "grid.meter:A-01_b", "", "meter"),
    ("meterId", "m" * 64, "m" * 65, "meter"),
    ("meterId", "M-1", "meter 1", "meter"),
    ("meterId", "M-1", 42, "meter"),
    ("meterId", "M-1", "métér", "meter"),
    ("kwhConsumedAc", 0, -0.001, "meter"),
    ("kwhConsumedAc", 12.5, "12.5", "meter"),
    ("kwhConsumedAc", 12, True, "meter"),
    ("kwhConsumedAc", 12, None, "meter"),
    ("voltage", 1000, 0, "meter"),
    ("voltage", 0.1, 1000.01, "meter"),
    ("voltage", 230, "230", "meter"),
    ("vehicleId", "EV-7", "ev/7", "vehicle"),
    ("soc", 0, -1, "vehicle"),
    ("soc", 100, 100.5, "vehicle"),
    ("soc", 55.5, "50", "vehicle"),
    ("soc", 55.5, False, "vehicle"),
    ("kwhDeliveredDc", 0, -5, "vehicle"),
    ("kwhDeliveredDc", 3.25, [3.25], "vehicle"),
    ("batteryTemp", -50, -50.5, "vehicle"),
    ("batteryTemp", 150, 150.5, "vehicle"),
    ("batteryTemp", 25, {"c": 25}, "vehicle"),
]


@pytest.mark.parametrize(("field", "good", "bad", "kind"), RULES)
def test_each_rule_accepts_the_good_value_and_names_the_bad_field(fake_app, fake_client, field, good, bad, kind):
    make = meter if kind == "meter" else vehicle
    good_body = {**make(), field: good}
    assert post(fake_client, good_body).status_code == 202, post(fake_client, good_body).get_json()
    before = stream_length(fake_app)
    r = post(fake_client, {**make(), field: bad})
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] == "invalid_reading"
    assert field in body["fields"]
    assert stream_length(fake_app) == before


@pytest.mark.parametrize("field", ["kwhConsumedAc", "voltage", "timestamp", "meterId"])
def test_missing_required_meter_field_is_named(fake_client, field):
    body = meter()
    del body[field]
    r = post(fake_client, body)
    assert r.status_code == 400
    assert field in r.get_json()["fields"]


@pytest.mark.parametrize("field", ["soc", "kwhDeliveredDc", "batteryTemp", "timestamp"])
def test_missing_required_vehicle_field_is_named(fake_client, field):
    body = vehicle()
    del body[field]
    r = post(fake_client, body)
    assert r.status_code == 400
    assert field in r.get_json()["fields"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_are_not_numbers(fake_client, literal):
    raw = f'{{"meterId": "m1", "kwhConsumedAc": {literal}, "voltage": 230, "timestamp": "{iso(minutes_ago(1))}"}}'
    r = fake_client.post("/v1/telemetry", data=raw, content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"] in ("malformed_json", "invalid_reading")


def test_both_ids_is_an_error(fake_client):
    r = post(fake_client, {**meter(), "vehicleId": "v1"})
    assert r.status_code == 400
    assert set(r.get_json()["fields"]) == {"meterId", "vehicleId"}


def test_neither_id_is_an_error(fake_client):
    body = meter()
    del body["meterId"]
    r = post(fake_client, body)
    assert r.status_code == 400
    assert "meterId" in r.get_json()["fields"]


class TestTimestamps:
    @pytest.mark.parametrize(
        ("offset_hours", "fmt"),
        [(0, "%Y-%m-%dT%H:%M:%SZ"), (2, "%Y-%m-%dT%H:%M:%S%z"), (-5.5, "%Y-%m-%dT%H:%M:%S.%f%z")],
    )
    def test_iso_with_offset_is_accepted(self, fake_client, offset_hours, fmt):
        zone = timezone(timedelta(hours=offset_hours))
        value = (datetime.now(UTC) - timedelta(minutes=5)).astimezone(zone).strftime(fmt)
        if fmt.endswith("%z"):
            value = value[:-2] + ":" + value[-2:]  # +0200 -> +02:00
        assert post(fake_client, {**meter(), "timestamp": value}).status_code == 202

    @pytest.mark.parametrize("value", ["2026-11-26T10:00:00", "2026-11-26", "yesterday", 1764150000, "", None])
    def test_naive_bare_date_or_non_iso_is_rejected(self, fake_client, value):
        r = post(fake_client, {**meter(), "timestamp": value})
        assert r.status_code == 400
        assert "timestamp" in r.get_json()["fields"]

    def test_within_allowed_skew_in_the_future_is_accepted(self, fake_client):
        ts = datetime.now(UTC) + timedelta(seconds=240)
        assert post(fake_client, meter(ts=ts)).status_code == 202

    def test_beyond_allowed_skew_in_the_future_is_rejected(self, fake_client):
        ts = datetime.now(UTC) + timedelta(seconds=360)
        r = post(fake_client, meter(ts=ts))
        assert r.status_code == 400
        assert "future" in r.get_json()["fields"]["timestamp"][0]

    def test_inside_retention_is_accepted(self, fake_client):
        assert post(fake_client, meter(ts=datetime.now(UTC) - timedelta(days=89))).status_code == 202

    def test_older_than_retention_is_rejected(self, fake_client):
        r = post(fake_client, meter(ts=datetime.now(UTC) - timedelta(days=91)))
        assert r.status_code == 400
        assert "retention" in r.get_json()["fields"]["timestamp"][0]


class TestBatches:
    def test_one_bad_item_rejects_the_whole_batch_with_its_index(self, fake_app, fake_client):
        batch = [meter("m1"), vehicle("v1"), {**vehicle("v2"), "soc": 101}, meter("m2"), "not an object"]
        r = post(fake_client, batch)
        assert r.status_code == 400
        body = r.get_json()
        assert body["error"] == "invalid_batch"
        assert [item["index"] for item in body["items"]] == [2, 4]
        assert "soc" in body["items"][0]["fields"]
        assert stream_length(fake_app) == 0
        assert fake_app.extensions["redis"].keys("latest:*") == []

    def test_empty_array_is_rejected(self, fake_client):
        r = post(fake_client, [])
        assert r.status_code == 400
        assert r.get_json()["error"] == "empty_batch"

    @pytest.mark.parametrize("raw", ['"just a string"', "42", "null", "true"])
    def test_a_body_that_is_not_an_object_or_array_is_rejected(self, fake_client, raw):
        r = fake_client.post("/v1/telemetry", data=raw, content_type="application/json")
        assert r.status_code == 400
        assert r.get_json()["error"] == "invalid_body"

    def test_more_readings_than_the_limit_is_413(self, fake_app, fake_client):
        fake_app.config["MAX_READINGS_PER_REQUEST"] = 3
        assert post(fake_client, [meter(f"m{i}") for i in range(3)]).status_code == 202
        r = post(fake_client, [meter(f"m{i}") for i in range(4)])
        assert r.status_code == 413
        assert r.get_json()["error"] == "too_many_readings"


class TestTransport:
    def test_malformed_json_is_400(self, fake_client):
        r = fake_client.post("/v1/telemetry", data='{"meterId": ', content_type="application/json")
        assert r.status_code == 400
        assert r.get_json()["error"] == "malformed_json"

    def test_invalid_utf8_is_400(self, fake_client):
        r = fake_client.post("/v1/telemetry", data=b'{"meterId": "\xff\xfe"}', content_type="application/json")
        assert r.status_code == 400

    def test_deep_nesting_is_400_not_500(self, fake_client):
        r = fake_client.post("/v1/telemetry", data="[" * 100_000 + "]" * 100_000, content_type="application/json")
        assert r.status_code == 400

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
    def test_wrong_content_type_is_415(self, fake_client, content_type):
        kwargs = {"content_type": content_type} if content_type else {}
        r = fake_client.post("/v1/telemetry", data='{"meterId": "m1"}', **kwargs)
        assert r.status_code == 415
        assert r.get_json()["error"] == "unsupported_media_type"

    def test_json_with_charset_is_accepted(self, fake_client):
        import json

        r = fake_client.post("/v1/telemetry", data=json.dumps(meter()), content_type="application/json; charset=utf-8")
        assert r.status_code == 202

    def test_body_larger_than_the_byte_limit_is_413(self, fake_app, fake_client):
        fake_app.config["MAX_CONTENT_LENGTH"] = 2048
        r = fake_client.post("/v1/telemetry", data="[" + " " * 4096 + "]", content_type="application/json")
        assert r.status_code == 413
        assert r.get_json()["error"] == "request_entity_too_large"

    def test_get_on_the_ingest_route_is_405_json(self, fake_client):
        r = fake_client.get("/v1/telemetry")
        assert r.status_code == 405
        assert r.get_json()["error"] == "method_not_allowed"

    def test_unknown_route_is_404_json(self, fake_client):
        r = fake_client.get("/v1/nothing-here")
        assert r.status_code == 404
        assert r.get_json()["error"] == "not_found"


def test_redis_unreachable_is_503_json_not_500(settings, admin_token):
    from common.settings import Settings
    from web import create_app

    app = create_app(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_TIMEOUT": "0.5"}))
    r = keyed_client(app, admin_token, cache_from=settings).post("/v1/telemetry", json=meter())
    assert r.status_code == 503
    assert r.get_json()["error"] == "redis_unavailable"
    assert r.headers["Retry-After"]

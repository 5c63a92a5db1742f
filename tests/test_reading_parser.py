"""The parser's fast path agrees with the marshmallow schemas, the rules of record."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from common.streams import Reading
from tests.conftest import meter, vehicle
from web.telemetry import INVALID, ReadingParser

PARSER = ReadingParser(max_clock_skew_seconds=300, retention_days=90)
NOW = datetime.now(UTC)


def schema_result(item):
    """Return what marshmallow alone makes of ``item``: a Reading or the error messages."""
    try:
        return PARSER._schema_load(item)
    except ValidationError as exc:
        return exc.messages


def test_ordinary_readings_take_the_fast_path():
    for body in (meter(), vehicle(), meter(kwh=0, voltage=1000), vehicle(soc=100, kwh=0, temp=-50)):
        fast = PARSER._triage(body, datetime.now(UTC))
        assert type(fast) is Reading, body
        assert fast == schema_result(body)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 0.0, -0.0, 1000, 1000.0, 1000.0000001, 100, 100.5, -50, -50.5, 150, 150.5, 1e12, 1e12 + 1,
                     10**12 + 1, 2**53 + 1, 5e-324, True, False]),
    st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=1),
)
ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
    st.sampled_from(["", "m" * 64, "m" * 65, "a\n", "a b", "métér", "ev/7", "A-1\n"]),
    st.text(max_size=70), st.integers(), st.none(),
)


def _timestamp_texts():
    zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
    near = st.builds(lambda minutes, zone: (NOW + timedelta(minutes=minutes)).astimezone(zone),
                     st.floats(min_value=-91 * 1440, max_value=10, allow_nan=False), zones)
    return st.one_of(
        near.map(lambda d: d.isoformat()),
        near.map(lambda d: d.isoformat().replace("+00:00", "Z")),
        near.map(lambda d: d.replace(tzinfo=None).isoformat()),  # naive
        near.map(lambda d: d.date().isoformat()),  # bare date
        near.map(lambda d: d.strftime("%Y%m%dT%H%M%S%z")),  # basic format
        st.sampled_from(["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-26T10:00:00+25:00"]),
        st.text(max_size=30), st.integers(), st.none(),
    )


items = st.fixed_dictionaries(
    {},
    optional={
        "meterId": ids, "vehicleId": ids, "timestamp": _timestamp_texts(),
        "kwhConsumedAc": numbers, "voltage": numbers, "soc": numbers, "kwhDeliveredDc": numbers,
        "batteryTemp": numbers, "extra": st.integers(),
    },
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=st.one_of(items, st.builds(lambda d: {**meter(), **d}, items),
                      st.builds(lambda d: {**vehicle(), **d}, items), st.integers(), st.text(), st.none()))
@example(item={**meter(), "meterId": "a\n"})
@example(item={**meter(), "voltage": 0})
@example(item={**meter(), "kwhConsumedAc": True})
@example(item={**vehicle(), "soc": math.nan})
def test_the_fast_path_agrees_with_marshmallow_on_what_it_decides(item):
    """A reading it accepts is the one marshmallow builds; an item it calls invalid, marshmallow refuses."""
    fast = PARSER._triage(item, datetime.now(UTC))
    if type(fast) is Reading:
        assert schema_result(item) == fast
    elif fast is INVALID:
        assert isinstance(schema_result(item), dict), item


@pytest.mark.parametrize("bad_id", ["a\n", "A-1\n"])
def test_an_id_ending_in_a_newline_is_rejected(fake_client, bad_id):
    r = fake_client.post("/v1/telemetry", json={**meter(), "meterId": bad_id})
    assert r.status_code == 400
    assert "meterId" in r.get_json()["fields"]


def test_a_batch_mixing_fast_and_slow_items_reports_only_the_bad_ones(fake_client):
    zone = timezone(timedelta(hours=2))
    odd_but_valid = {**meter("m3"), "timestamp": (datetime.now(UTC) - timedelta(minutes=3)).astimezone(zone)
                     .strftime("%Y%m%dT%H%M%S%z")}
    batch = [meter("m1"), odd_but_valid, {**vehicle("v1"), "soc": "50"}, vehicle("v2")]
    r = fake_client.post("/v1/telemetry", json=batch)
    assert r.status_code == 400
    body = r.get_json()
    assert [item["index"] for item in body["items"]] == [2]
    assert "soc" in body["items"][0]["fields"]
    ok = fake_client.post("/v1/telemetry", json=[meter("m1"), odd_but_valid, vehicle("v2")])
    assert ok.status_code == 202
    assert ok.get_json() == {"accepted": 3, "meters": 2, "vehicles": 1}

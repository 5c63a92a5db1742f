"""GET /v1/analytics/performance/<vehicleId> through HTTP on the real services, with exact expected figures."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from common.streams import CONSUMER_GROUP, STREAM_KEY
from tests.conftest import iso, meter, vehicle
from workers.drain import StreamDrainer

# Yesterday 12:00 UTC: inside the partitions the test database has, and in the past.
TO = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
HOURS = 2
FROM = TO - timedelta(hours=HOURS)


def at(minutes_before_to: float) -> datetime:
    return TO - timedelta(minutes=minutes_before_to)


def add_meter(db, meter_id, points):
    """Insert (ts, kwh) readings of a meter straight into history."""
    with db.cursor() as cur:
        cur.executemany("INSERT INTO meter_readings VALUES (%s, %s, %s, 230.0)",
                        [(meter_id, ts, kwh) for ts, kwh in points])


def add_vehicle(db, vehicle_id, points):
    """Insert (ts, kwh, battery temp) readings of a vehicle straight into history."""
    with db.cursor() as cur:
        cur.executemany("INSERT INTO vehicle_readings VALUES (%s, %s, 50.0, %s, %s)",
                        [(vehicle_id, ts, kwh, temp) for ts, kwh, temp in points])


def map_vehicle(client, vehicle_id="v1", meter_id="m1"):
    assert client.post("/v1/mappings", json={"vehicleId": vehicle_id, "meterId": meter_id}).status_code in (200, 201)


def performance(client, vehicle_id="v1", hours=HOURS, to=TO, expect=200):
    r = client.get(f"/v1/analytics/performance/{vehicle_id}", query_string={"hours": hours, "to": iso(to)})
    assert r.status_code == expect, r.get_json()
    return r.get_json()


def test_monotonic_counters_give_max_minus_min(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(110), 100.0), (at(60), 101.5), (at(30), 103.25), (at(0), 104.0)])
    add_vehicle(db, "v1", [(at(100), 50.0, 30.0), (at(50), 52.5, 31.0), (at(10), 53.2, 35.0)])
    body = performance(client)
    assert body == {
        "vehicleId": "v1",
        "meterId": "m1",
        "windowHours": 2,
        "acKwh": 4.0,
        "dcKwh": 3.2,
        "efficiencyRatio": 0.8,
        "avgBatteryTemp": 32.0,
        "fromTs": iso(FROM),
        "toTs": iso(TO),
        "readings": {"meter": 4, "vehicle": 3},
        "counterResets": {"meter": 0, "vehicle": 0},
        "glitches": {"meter": 0, "vehicle": 0},
        "implausibleSteps": {"meter": 0, "vehicle": 0},
        "baselineTs": {"meter": None, "vehicle": None},
        "warnings": [],
    }


def test_a_reset_inside_the_window_adds_nothing_and_counting_continues(client, db):
    map_vehicle(client)
    # 100 -> 102 (+2), reset to 0.5 (+0), 0.5 -> 1.5 (+1): 3 kWh, where MAX - MIN would say 101.5.
    add_meter(db, "m1", [(at(100), 100.0), (at(80), 102.0), (at(60), 0.5), (at(40), 1.5)])
    # The vehicle resets twice: 10 -> 12 (+2), 1 (+0), 4 (+3), 2 (+0), 2.5 (+0.5).
    add_vehicle(db, "v1", [(at(100), 10.0, 20.0), (at(90), 12.0, 20.0), (at(70), 1.0, 20.0),
                           (at(50), 4.0, 20.0), (at(30), 2.0, 20.0), (at(20), 2.5, 20.0)])
    body = performance(client)
    assert (body["acKwh"], body["dcKwh"]) == (3.0, 5.5)
    assert body["counterResets"] == {"meter": 1, "vehicle": 2}
    assert body["efficiencyRatio"] == round(5.5 / 3.0, 4) == 1.8333
    assert body["warnings"] and "above 1" in body["warnings"][0]


def test_energy_starts_from_the_last_reading_before_the_window(client, db):
    map_vehicle(client)
    # 99.0 (5 min before the window) -> 100.0 -> 101.0: 2 kWh, although the window alone spans 1 kWh.
    add_meter(db, "m1", [(at(200), 90.0), (at(125), 99.0), (at(110), 100.0), (at(50), 101.0)])
    add_vehicle(db, "v1", [(at(125), 40.0, 10.0), (at(100), 41.5, 20.0), (at(5), 41.6, 30.0)])
    body = performance(client)
    assert (body["acKwh"], body["dcKwh"]) == (2.0, 1.6)
    assert body["readings"] == {"meter": 2, "vehicle": 2}
    assert body["baselineTs"] == {"meter": iso(at(125)), "vehicle": iso(at(125))}
    # The baseline's temperature is not part of the window's average.
    assert body["avgBatteryTemp"] == 25.0


def test_a_reset_between_the_baseline_and_the_window_counts_as_a_reset(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(130), 500.0), (at(100), 2.0), (at(50), 7.0)])
    body = performance(client)
    assert body["acKwh"] == 5.0
    assert body["counterResets"]["meter"] == 1


def test_a_baseline_older_than_the_lookback_is_not_used(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(FROM - timedelta(days=8), 1.0), (at(60), 10.0), (at(30), 12.0)])
    body = performance(client)
    assert body["acKwh"] == 2.0
    assert body["baselineTs"]["meter"] is None


def test_no_data_at_all_is_200_with_zeros_and_nulls(client):
    map_vehicle(client)
    body = performance(client)
    assert (body["acKwh"], body["dcKwh"], body["efficiencyRatio"], body["avgBatteryTemp"]) == (0.0, 0.0, None, None)
    assert body["readings"] == {"meter": 0, "vehicle": 0}
    assert body["counterResets"] == {"meter": 0, "vehicle": 0}
    assert body["warnings"] == []


def test_zero_ac_energy_gives_a_null_ratio(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(100), 50.0), (at(50), 50.0)])
    add_vehicle(db, "v1", [(at(100), 5.0, 25.0), (at(50), 6.0, 25.0)])
    body = performance(client)
    assert (body["acKwh"], body["dcKwh"], body["efficiencyRatio"]) == (0.0, 1.0, None)
    assert any("drew no energy" in w for w in body["warnings"])


def test_readings_on_the_window_edges(client, db):
    map_vehicle(client)
    # The reading exactly at `from` is outside the window (it is the baseline); the one at `to` is inside;
    # one microsecond after `to` is outside.
    add_meter(db, "m1", [(FROM - timedelta(minutes=1), 5.0), (FROM, 10.0), (at(60), 11.0), (TO, 13.0),
                         (TO + timedelta(microseconds=1), 50.0)])
    body = performance(client)
    assert body["acKwh"] == 3.0
    assert body["readings"]["meter"] == 2
    assert body["baselineTs"]["meter"] == iso(FROM)


def test_a_remapped_vehicle_is_measured_against_its_current_meter(client, db):
    map_vehicle(client, "v1", "m-old")
    add_meter(db, "m-old", [(at(100), 0.0), (at(10), 100.0)])
    add_meter(db, "m-new", [(at(100), 10.0), (at(10), 12.5)])
    add_vehicle(db, "v1", [(at(100), 0.0, 20.0), (at(10), 2.0, 20.0)])
    assert performance(client)["acKwh"] == 100.0
    map_vehicle(client, "v1", "m-new")
    body = performance(client)
    assert (body["meterId"], body["acKwh"], body["efficiencyRatio"]) == ("m-new", 2.5, 0.8)


def test_a_ratio_above_one_is_reported_unclamped_and_flagged(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(100), 0.0), (at(10), 1.0)])
    add_vehicle(db, "v1", [(at(100), 0.0, 20.0), (at(10), 1.25, 20.0)])
    body = performance(client)
    assert body["efficiencyRatio"] == 1.25
    assert len(body["warnings"]) == 1
    assert "above 1" in body["warnings"][0]


def test_figures_are_rounded_half_up(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(100), 0.0), (at(10), 3.0)])
    add_vehicle(db, "v1", [(at(100), 0.0, 20.0), (at(50), 2.0005, 21.0), (at(10), 2.0005, 20.0)])
    body = performance(client)
    assert body["dcKwh"] == 2.001
    assert body["efficiencyRatio"] == 0.667  # the ratio of the reported figures: 2.001 / 3.0
    assert body["avgBatteryTemp"] == 20.333


def test_window_defaults_to_the_last_24_hours(client, db):
    map_vehicle(client)
    now = datetime.now(UTC)
    add_meter(db, "m1", [(now - timedelta(hours=30), 1.0), (now - timedelta(hours=20), 3.0),
                         (now - timedelta(minutes=5), 4.0)])
    r = client.get("/v1/analytics/performance/v1")
    assert r.status_code == 200
    body = r.get_json()
    assert body["windowHours"] == 24
    assert body["acKwh"] == 3.0  # from the baseline 30 h ago: 1 -> 3 -> 4
    to_ts = datetime.fromisoformat(body["toTs"])
    assert abs((to_ts - now).total_seconds()) < 60
    assert datetime.fromisoformat(body["fromTs"]) == to_ts - timedelta(hours=24)


def test_to_accepts_any_offset_and_a_plus_decoded_as_space(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(100), 0.0), (at(10), 1.0)])
    local = TO.astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    raw = local.isoformat()  # ...+02:00
    for query in (f"to={raw.replace('+', '%2B')}", f"to={raw}"):  # a bare '+' arrives as a space
        r = client.get(f"/v1/analytics/performance/v1?hours=2&{query}")
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["toTs"] == iso(TO)
        assert r.get_json()["acKwh"] == 1.0


def test_unmapped_vehicle_is_404_json(client):
    r = client.get("/v1/analytics/performance/nobody")
    assert r.status_code == 404
    assert r.get_json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("hours=0", "hours"),
        ("hours=2161", "hours"),  # beyond the retention period (90 days)
        ("hours=1.5", "hours"),
        ("hours=abc", "hours"),
        ("hours=", "hours"),
        ("to=yesterday", "to"),
        ("to=2026-01-01T00:00:00", "to"),  # no offset
        ("to=2026-01-01", "to"),
        ("to=0001-01-01T00:00:00%2B05:00", "to"),
        ("to=1969-12-31T00:00:00Z", "to"),
    ],
)
def test_bad_parameters_are_400_naming_them(client, query, parameter):
    map_vehicle(client)
    r = client.get(f"/v1/analytics/performance/v1?{query}")
    assert r.status_code == 400
    body = r.get_json()
    assert body["parameter"] == parameter
    assert parameter in body["message"]


def test_bad_vehicle_id_is_400_naming_it(client):
    r = client.get("/v1/analytics/performance/" + "v" * 65)
    assert r.status_code == 400
    assert r.get_json()["parameter"] == "vehicleId"


# -- through the whole pipeline: duplicates and shuffled arrival --------------------------------------------------


def drain_all(settings, redis_client):
    drainer = StreamDrainer(settings, redis_client, "analytics-test")
    drainer.ensure_group()
    try:
        for _ in range(100):
            drained = drainer.drain_once(block_ms=10)
            if drained == 0 and not redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"]:
                return
        raise AssertionError("the stream did not drain")
    finally:
        drainer.close()


def test_duplicates_and_shuffled_arrival_change_nothing(client, settings, redis_client):
    map_vehicle(client)
    to = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    meter_series = [(to - timedelta(minutes=m), kwh) for m, kwh in
                    [(130, 95.0), (110, 100.0), (90, 101.0), (70, 0.25), (50, 1.0), (30, 2.5), (0, 3.0)]]
    vehicle_series = [(to - timedelta(minutes=m), kwh, temp) for m, kwh, temp in
                      [(125, 80.0, 20.0), (100, 81.0, 22.0), (60, 82.0, 24.0), (20, 83.5, 26.0)]]
    readings = [meter("m1", kwh=kwh, ts=ts) for ts, kwh in meter_series]
    readings += [vehicle("v1", kwh=kwh, temp=temp, ts=ts) for ts, kwh, temp in vehicle_series]
    # Shuffled, with half the readings sent twice, over several requests and drains.
    shuffled = readings + readings[::2]
    random.Random(7).shuffle(shuffled)
    for chunk in (shuffled[:5], shuffled[5:9], shuffled[9:]):
        assert client.post("/v1/telemetry", json=chunk).status_code == 202
        drain_all(settings, redis_client)
    body = performance(client, hours=2, to=to)
    # Meter: baseline 95 -> 100 (+5) -> 101 (+1) -> reset 0.25 -> 1 (+0.75) -> 2.5 (+1.5) -> 3 (+0.5).
    # Vehicle: baseline 80 -> 81 -> 82 -> 83.5: 3.5.
    assert (body["acKwh"], body["dcKwh"]) == (8.75, 3.5)
    assert body["counterResets"] == {"meter": 1, "vehicle": 0}
    assert body["readings"] == {"meter": 6, "vehicle": 3}
    assert body["avgBatteryTemp"] == 24.0
    assert body["efficiencyRatio"] == 0.4
    # Sending everything once more in order changes nothing.
    assert client.post("/v1/telemetry", json=readings).status_code == 202
    drain_all(settings, redis_client)
    assert performance(client, hours=2, to=to) == body

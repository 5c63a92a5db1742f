"""The one counter rule set (sql/migrations/0008_counter_rules.sql): glitch, reset and implausible-step fixtures."""

from datetime import timedelta

from tests.conftest import iso
from tests.test_analytics import FROM, TO, add_meter, add_vehicle, at, map_vehicle, performance


def steps(db, kind, device_id, from_ts=FROM, to_ts=TO, max_power_kw=10_000.0):
    """Return counter_steps() rows as (energy, flag) with flag in '', glitch, reset, implausible."""
    rows = db.execute(
        "SELECT energy_kwh, is_glitch, is_reset, is_implausible FROM counter_steps(%s, %s, %s, %s, %s) ORDER BY ts",
        (kind, device_id, from_ts, to_ts, max_power_kw),
    ).fetchall()
    return [(e, "glitch" if g else "reset" if r else "implausible" if i else "") for e, g, r, i in rows]


def test_a_placeholder_zero_between_two_readings_is_a_glitch_not_a_reset(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(90), 100.0), (at(60), 0.0), (at(30), 101.0)])
    body = performance(client)
    assert body["acKwh"] == 1.0  # not 101
    assert (body["glitches"]["meter"], body["counterResets"]["meter"]) == (1, 0)
    assert any("glitch" in w for w in body["warnings"])
    assert steps(db, "meter", "m1") == [(0.0, ""), (0.0, "glitch"), (1.0, "")]


def test_the_reported_attack_three_hours_back_changes_nothing(client, db):
    """A 0 three hours back in a 200,000 kWh register: the old rule counted the register again."""
    map_vehicle(client)
    points = [(at(110 - 10 * n), 200_000.0 + 15 * n) for n in range(12)]
    add_meter(db, "m1", points)
    clean = performance(client)["acKwh"]
    add_meter(db, "m1", [(at(65), 0.0)])
    body = performance(client)
    assert body["acKwh"] == clean == 165.0
    assert body["glitches"]["meter"] == 1


def test_a_drop_that_stays_is_a_reset(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(90), 100.0), (at(60), 2.0), (at(30), 3.0)])
    body = performance(client)
    assert body["acKwh"] == 1.0
    assert (body["glitches"]["meter"], body["counterResets"]["meter"]) == (0, 1)
    assert any("reset" in w for w in body["warnings"])


def test_a_last_drop_is_a_reset_until_a_next_reading_climbs_back(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(90), 100.0), (at(60), 104.0), (at(30), 0.0)])
    body = performance(client)
    assert (body["acKwh"], body["counterResets"]["meter"], body["glitches"]["meter"]) == (4.0, 1, 0)
    # The next reading arrives after the window and climbs back: the drop was a glitch after all.
    add_meter(db, "m1", [(TO + timedelta(minutes=5), 105.0)])
    body = performance(client)
    assert (body["acKwh"], body["counterResets"]["meter"], body["glitches"]["meter"]) == (4.0, 0, 1)


def test_a_glitch_just_before_the_window_counts_from_its_predecessor(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(FROM - timedelta(minutes=20), 50.0), (FROM - timedelta(minutes=10), 0.0),
                         (at(100), 52.0), (at(50), 53.0)])
    body = performance(client)
    assert body["acKwh"] == 3.0
    assert body["baselineTs"]["meter"] == iso(FROM - timedelta(minutes=20))
    assert (body["glitches"]["meter"], body["counterResets"]["meter"]) == (0, 0)  # the glitch is outside


def test_zero_to_1e12_in_a_minute_is_implausible(client, db):
    map_vehicle(client)
    add_meter(db, "m1", [(at(62), 0.0), (at(61), 1e12), (at(30), 1e12 + 2.0)])
    add_vehicle(db, "v1", [(at(62), 10.0, 20.0), (at(61), 1e12, 20.0), (at(30), 11.0, 20.0)])
    body = performance(client)
    # The meter goes on counting from the absurd value; the vehicle's spike falls back (a reset).
    assert (body["acKwh"], body["implausibleSteps"]["meter"]) == (2.0, 1)
    assert (body["dcKwh"], body["implausibleSteps"]["vehicle"], body["counterResets"]["vehicle"]) == (0.0, 1, 1)
    assert any("MAX_METER_POWER_KW" in w for w in body["warnings"])
    assert any("MAX_VEHICLE_POWER_KW" in w for w in body["warnings"])


def test_the_power_ceiling_is_per_kind_and_inclusive(db):
    # 10 kWh in 6 minutes is 100 kW on average: allowed at a 100 kW ceiling, implausible at 99.
    add_meter(db, "m1", [(at(66), 0.0), (at(60), 10.0)])
    assert steps(db, "meter", "m1", max_power_kw=100.0) == [(0.0, ""), (10.0, "")]
    assert steps(db, "meter", "m1", max_power_kw=99.0) == [(0.0, ""), (0.0, "implausible")]
    assert steps(db, "vehicle", "m1") == []


def test_the_power_ceilings_come_from_the_settings():
    from common.settings import Settings

    s = Settings.from_env({"MAX_METER_POWER_KW": "250", "MAX_VEHICLE_POWER_KW": "150.5"})
    assert (s.max_meter_power_kw, s.max_vehicle_power_kw) == (250.0, 150.5)
    assert (Settings().max_meter_power_kw, Settings().max_vehicle_power_kw) == (10_000.0, 4_000.0)


def test_neighbours_further_than_seven_days_are_not_neighbours(db):
    add_meter(db, "m1", [(FROM - timedelta(days=7, minutes=1), 1.0), (at(60), 10.0), (at(30), 12.0)])
    assert steps(db, "meter", "m1") == [(0.0, ""), (2.0, "")]


def test_the_readme_worked_example_still_gives_its_figures(client, db):
    map_vehicle(client, "vehicle-7", "meter-7")
    t = TO - timedelta(hours=1)
    add_meter(db, "meter-7", [(t - timedelta(minutes=5), 120.0), (t + timedelta(minutes=15), 121.5),
                              (t + timedelta(minutes=30), 0.4), (t + timedelta(minutes=45), 1.9),
                              (TO, 3.0)])
    add_vehicle(db, "vehicle-7", [(t - timedelta(minutes=2), 40.0, 29.0), (t + timedelta(minutes=20), 41.2, 31.0),
                                  (t + timedelta(minutes=40), 42.5, 33.0), (t + timedelta(minutes=55), 43.4, 35.0)])
    body = performance(client, "vehicle-7", hours=1)
    assert (body["acKwh"], body["dcKwh"], body["efficiencyRatio"], body["avgBatteryTemp"]) == (4.1, 3.4, 0.8293, 33.0)
    assert body["counterResets"] == {"meter": 1, "vehicle": 0}
    assert body["glitches"] == {"meter": 0, "vehicle": 0}

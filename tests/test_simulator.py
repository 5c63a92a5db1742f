"""The simulator: its readings pass the engine's validation, and its charging model obeys physics and its script."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from simulator.mess import GLITCH, RESET, SILENT, MessConfig, Simulation
from simulator.model import CHARGING, ChargingModel, FleetConfig, minutes_between, taper
from web.telemetry import ReadingParser

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
# Enough mess that every kind happens in a day of 30 vehicles.
MESSY = MessConfig(meter_replacements=2, silent_vehicles=2, glitch_rate=0.002, late_rate=0.003,
                   duplicate_rate=0.003, skew_rate=0.02)


@pytest.fixture(scope="module")
def day():
    """A day of 30 vehicles with every kind of mess: (simulation, readings in delivery order)."""
    simulation = Simulation(FleetConfig(vehicles=30, seed=7), NOW - timedelta(hours=24), MESSY,
                            silent_at=NOW - timedelta(hours=2))
    readings = [r for ts in minutes_between(simulation.start, NOW) for r in simulation.step(ts)]
    return simulation, readings + simulation.flush_late()


def test_every_reading_passes_the_engines_validation(day):
    _, readings = day
    parser = ReadingParser(max_clock_skew_seconds=300, retention_days=90)
    for reading in readings:
        parser.parse_item(reading)  # raises ValidationError naming the field
    # The marshmallow schemas are the rules of record: check them too on a sample, not only the fast path.
    for reading in readings[::97]:
        parser._schema_load(reading)
    assert len(readings) > 30 * 2 * 1400


def test_every_kind_of_mess_happens_and_is_recorded(day):
    simulation, readings = day
    kinds = {event.kind for event in simulation.events}
    assert kinds == {"reset", "glitch", "silent", "late", "duplicate", "skew"}
    keys = [(r.get("meterId") or r["vehicleId"], r["timestamp"]) for r in readings]
    assert len(keys) - len(set(keys)) == sum(e.kind == "duplicate" for e in simulation.events)


def test_counters_never_decrease_except_on_the_scripted_reset_or_glitch(day):
    simulation, readings = day
    scripted = {(e.device_id, e.timestamp) for e in simulation.events if e.kind in (RESET, GLITCH)}
    series = defaultdict(list)
    for r in readings:
        if "meterId" in r:
            series[r["meterId"]].append((r["timestamp"], r["kwhConsumedAc"]))
        else:
            series[r["vehicleId"]].append((r["timestamp"], r["kwhDeliveredDc"]))
    decreases = set()
    for device, points in series.items():
        points = sorted(set(points))
        clean = [(ts, v) for ts, v in points if (device, ts) not in scripted or v != 0.0]
        for (_, before), (ts, after) in pairwise(clean):
            if after < before:
                decreases.add((device, ts))
    resets = {(e.device_id, e.timestamp) for e in simulation.events if e.kind == RESET}
    assert decreases == resets and len(resets) == 2


def test_glitch_is_a_placeholder_zero_and_the_next_reading_climbs_back(day):
    simulation, readings = day
    glitches = [e for e in simulation.events if e.kind == GLITCH]
    assert glitches
    by_key = {(r.get("meterId"), r["timestamp"]): r for r in readings if "meterId" in r}
    for event in glitches:
        assert by_key[(event.device_id, event.timestamp)]["kwhConsumedAc"] == 0.0


def test_a_silent_vehicle_sends_nothing_after_it_went_silent_but_its_meter_does(day):
    simulation, readings = day
    silent_ids = simulation.silent_vehicle_ids()
    assert {e.device_id for e in simulation.events if e.kind == SILENT} == set(silent_ids)
    cutoff = (NOW - timedelta(hours=2)).isoformat()
    for vehicle_id in silent_ids:
        late = [r for r in readings if r.get("vehicleId") == vehicle_id and r["timestamp"] >= cutoff]
        # Only a reading held back before the silence (late delivery) or skewed a few seconds may carry a later stamp.
        assert all(r["timestamp"] < (NOW - timedelta(hours=2) + timedelta(seconds=30)).isoformat() for r in late)
        meter_id = vehicle_id.replace("vehicle", "meter")
        assert any(r.get("meterId") == meter_id and r["timestamp"] >= cutoff for r in readings)


def test_charging_model_keeps_soc_in_range_and_efficiency_inside_the_configured_range():
    config = FleetConfig(vehicles=40, seed=3, efficiency_range=(0.85, 0.95))
    model = ChargingModel(config)
    previous = {v.index: (v.kwh_ac, v.kwh_dc) for v in model.vehicles}
    seen_charging = seen_full = 0
    for _ in range(3 * 24 * 60):
        for v in model.vehicles:
            was_charging = v.mode == CHARGING
            model.advance(v)
            ac0, dc0 = previous[v.index]
            assert 0.0 <= v.soc <= 100.0
            assert v.kwh_ac >= ac0 and v.kwh_dc >= dc0
            if was_charging and v.kwh_dc > dc0:
                seen_charging += 1
                ratio = (v.kwh_dc - dc0) / (v.kwh_ac - ac0)
                assert 0.85 - 1e-9 <= ratio <= 0.95 + 1e-9
            seen_full += v.soc > 99.0
            previous[v.index] = (v.kwh_ac, v.kwh_dc)
    assert seen_charging > 1000 and seen_full > 0


def test_charging_tapers_above_80_percent():
    assert taper(50.0) == 1.0 and taper(80.0) == 1.0
    assert taper(90.0) == pytest.approx(0.5)
    assert 0.0 < taper(100.0) < taper(95.0) < taper(85.0)


def test_battery_warms_while_charging_and_relaxes_after():
    model = ChargingModel(FleetConfig(vehicles=1, seed=11, charger_kw_choices=(50.0,)))
    v = model.vehicles[0]
    v.soc, v.battery_c, v.mode, v.minutes_left, v.target_soc = 20.0, v.ambient_c, CHARGING, 10_000, 100.0
    for _ in range(30):
        model.advance(v)
    warmed = v.battery_c
    assert warmed > v.ambient_c + 5
    v.mode, v.minutes_left = "idle", 10_000
    for _ in range(60):
        model.advance(v)
    assert v.ambient_c <= v.battery_c < warmed - 5


def test_same_seed_same_fleet():
    a = Simulation(FleetConfig(vehicles=5, seed=9), NOW - timedelta(hours=1))
    b = Simulation(FleetConfig(vehicles=5, seed=9), NOW - timedelta(hours=1))
    ts = NOW - timedelta(minutes=30)
    assert a.step(ts) == b.step(ts)

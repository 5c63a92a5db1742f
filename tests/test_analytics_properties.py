"""Property tests of the counter energy (hypothesis) through HTTP on the real services."""

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.settings import Settings
from tests.conftest import iso
from tests.counter_model import window_energy

TO = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
HOURS = 6
FROM = TO - timedelta(hours=HOURS)
MAX_METER_KW = Settings().max_meter_power_kw
# Minutes before `to` of each reading: a few before the window (baseline candidates), the rest inside.
offsets = st.lists(st.integers(min_value=0, max_value=(HOURS + 3) * 60), min_size=1, max_size=40, unique=True)
# Counter values in whole watt-hours so that the expected figure is exact to the API's 3 decimals; at most
# 50 kWh a minute (3 MW), under the meter's power ceiling: a clean counter has no implausible step.
increments = st.lists(st.integers(min_value=0, max_value=50_000), min_size=40, max_size=40)
PROFILE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _series(offsets_min, increments_wh, start_wh):
    """Return (ts, kWh) in time order for a monotonic counter."""
    times = sorted(TO - timedelta(minutes=m) for m in offsets_min)
    values, total = [], start_wh
    for step in increments_wh[: len(times)]:
        total += step
        values.append(total)
    return [(ts, wh / 1000) for ts, wh in zip(times, values, strict=True)]


def _store_and_measure(client, db, points) -> dict:
    """Store a fresh meter's readings, map a fresh vehicle to it, return the analytics answer."""
    meter_id, vehicle_id = f"m-{uuid.uuid4().hex[:12]}", f"v-{uuid.uuid4().hex[:12]}"
    with db.cursor() as cur:
        cur.executemany("INSERT INTO meter_readings VALUES (%s, %s, %s, 230.0)",
                        [(meter_id, ts, v) for ts, v in points])
    client.post("/v1/mappings", json={"vehicleId": vehicle_id, "meterId": meter_id})
    r = client.get(f"/v1/analytics/performance/{vehicle_id}", query_string={"hours": HOURS, "to": iso(TO)})
    assert r.status_code == 200
    return r.get_json()


def _used(points):
    """The readings that count: the last one at or before `from` (the baseline), then those in the window."""
    before = [p for p in points if p[0] <= FROM]
    inside = [p for p in points if FROM < p[0] <= TO]
    return before[-1:] + inside


@PROFILE
@given(offsets_min=offsets, increments_wh=increments, start_wh=st.integers(min_value=0, max_value=10**9))
def test_monotonic_energy_is_max_minus_min_including_the_baseline(client, db, offsets_min, increments_wh, start_wh):
    points = _series(offsets_min, increments_wh, start_wh)
    used = _used(points)
    body = _store_and_measure(client, db, points)
    expected = round((max(v for _, v in used) - min(v for _, v in used)), 3) if used else 0.0
    assert body["acKwh"] == expected
    assert (body["counterResets"]["meter"], body["glitches"]["meter"], body["implausibleSteps"]["meter"]) == (0, 0, 0)
    assert body["readings"]["meter"] == sum(1 for ts, _ in points if FROM < ts <= TO)


@PROFILE
@given(
    offsets_min=st.lists(st.integers(min_value=0, max_value=(HOURS + 3) * 60), min_size=3, max_size=40, unique=True),
    increments_wh=increments,
    start_wh=st.integers(min_value=1, max_value=10**6),
    where=st.integers(min_value=0, max_value=10**6),
    glitch_share=st.floats(min_value=0, max_value=0.999),
)
def test_one_glitch_anywhere_changes_no_energy(client, db, offsets_min, increments_wh, start_wh, where, glitch_share):
    points = _series(offsets_min, increments_wh, start_wh)
    clean = _store_and_measure(client, db, points)
    # A reading below its predecessor, 30 s after it, that the next reading climbs back above.
    k = where % (len(points) - 1)
    glitch = (points[k][0] + timedelta(seconds=30), round(points[k][1] * glitch_share, 3))
    body = _store_and_measure(client, db, sorted([*points, glitch]))
    assert body["acKwh"] == clean["acKwh"]
    assert body["counterResets"] == clean["counterResets"]
    inside = FROM < glitch[0] <= TO
    assert body["glitches"]["meter"] == int(inside)
    assert body["readings"]["meter"] == clean["readings"]["meter"] + int(inside)


@PROFILE
@given(
    offsets_min=offsets,
    increments_wh=increments,
    start_wh=st.integers(min_value=0, max_value=10**6),
    drops=st.lists(st.tuples(st.integers(min_value=0, max_value=39), st.integers(min_value=0, max_value=10**6),
                             st.booleans()), max_size=5),
)
def test_resets_and_glitches_follow_the_rules(client, db, offsets_min, increments_wh, start_wh, drops):
    points = _series(offsets_min, increments_wh, start_wh)
    values_wh = [round(v * 1000) for _, v in points]
    for position, low_wh, stays in drops:
        if position < len(values_wh) and low_wh < values_wh[position]:
            if stays:  # a reset: the counter restarts lower and goes on increasing from there
                drop = values_wh[position] - low_wh
                values_wh[position:] = [v - drop for v in values_wh[position:]]
            else:  # one reading low (a placeholder); the rest unchanged
                values_wh[position] = low_wh
    points = [(ts, wh / 1000) for (ts, _), wh in zip(points, values_wh, strict=True)]
    expected = window_energy(points, FROM, TO, MAX_METER_KW)
    body = _store_and_measure(client, db, points)
    assert body["acKwh"] >= 0
    assert body["acKwh"] == round(expected["energy"], 3)
    assert body["counterResets"]["meter"] == expected["resets"]
    assert body["glitches"]["meter"] == expected["glitches"]
    assert body["implausibleSteps"]["meter"] == expected["implausible"]

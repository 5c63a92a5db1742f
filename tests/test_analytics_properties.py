"""Property tests of the counter energy (hypothesis) through HTTP on the real services."""

import itertools
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import iso

TO = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
HOURS = 6
FROM = TO - timedelta(hours=HOURS)
# Seconds before `to` of each reading: a few before the window (baseline candidates), the rest inside.
offsets = st.lists(st.integers(min_value=0, max_value=(HOURS + 3) * 3600), min_size=1, max_size=40, unique=True)
# Counter values in whole watt-hours so that the expected figure is exact to the API's 3 decimals.
increments = st.lists(st.integers(min_value=0, max_value=50_000), min_size=40, max_size=40)
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _series(offsets_s, increments_wh, start_wh):
    """Return (ts, kWh) in time order for a monotonic counter."""
    times = sorted(TO - timedelta(seconds=s) for s in offsets_s)
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
@given(offsets_s=offsets, increments_wh=increments, start_wh=st.integers(min_value=0, max_value=10**9))
def test_monotonic_energy_is_max_minus_min_including_the_baseline(client, db, offsets_s, increments_wh, start_wh):
    points = _series(offsets_s, increments_wh, start_wh)
    used = _used(points)
    body = _store_and_measure(client, db, points)
    expected = round((max(v for _, v in used) - min(v for _, v in used)), 3) if used else 0.0
    assert body["acKwh"] == expected
    assert body["counterResets"]["meter"] == 0
    assert body["readings"]["meter"] == sum(1 for ts, _ in points if FROM < ts <= TO)


@PROFILE
@given(
    offsets_s=offsets,
    increments_wh=increments,
    start_wh=st.integers(min_value=0, max_value=10**6),
    resets=st.lists(st.tuples(st.integers(min_value=0, max_value=39), st.integers(min_value=0, max_value=10**6)),
                    max_size=5),
)
def test_resets_never_make_energy_negative_and_each_step_counts_its_increase(
    client, db, offsets_s, increments_wh, start_wh, resets
):
    points = _series(offsets_s, increments_wh, start_wh)
    # A reset at position i: the counter restarts from a lower value and goes on increasing from there.
    values_wh = [round(v * 1000) for _, v in points]
    for position, restart_wh in resets:
        if position < len(values_wh) and restart_wh < values_wh[position]:
            drop = values_wh[position] - restart_wh
            values_wh[position:] = [v - drop for v in values_wh[position:]]
    points = [(ts, wh / 1000) for (ts, _), wh in zip(points, values_wh, strict=True)]
    used = _used(points)
    body = _store_and_measure(client, db, points)
    steps = [b - a for (_, a), (_, b) in itertools.pairwise(used)]
    assert body["acKwh"] >= 0
    assert body["acKwh"] == round(sum(s for s in steps if s > 0), 3)
    assert body["counterResets"]["meter"] == sum(1 for s in steps if s < 0)
    assert body["acKwh"] <= round(sum(increments_wh[: len(points)]) / 1000, 3)

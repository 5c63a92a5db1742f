"""Hourly rollups: equal to the raw counter computation under late, shuffled and repeated delivery."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from scheduler import rollups
from tests.conftest import iso
from web.analytics import fetch_window, summarize, window_params
from workers.history_writer import HistoryWriter

BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
PROFILE = hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def raw_answer(db, settings, vehicle_id, from_ts, to_ts) -> dict:
    """The per-vehicle answer computed from raw history alone (the judge)."""
    meter_id = db.execute("SELECT meter_id FROM vehicle_meter_map WHERE vehicle_id = %s", (vehicle_id,)).fetchone()[0]
    meter_row, vehicle_row = fetch_window(db, window_params(vehicle_id, meter_id, from_ts, to_ts, settings))
    return summarize(vehicle_id, round((to_ts - from_ts) / timedelta(hours=1)), from_ts, to_ts, meter_row, vehicle_row)


def endpoint_answer(client, vehicle_id, from_ts, to_ts) -> dict:
    hours = round((to_ts - from_ts) / timedelta(hours=1))
    r = client.get(f"/v1/analytics/performance/{vehicle_id}", query_string={"hours": hours, "to": iso(to_ts)})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def write(settings, meters=(), vehicles=()):
    """Write readings through the drain's writer (one transaction, as a drained batch)."""
    with psycopg.connect(settings.database_url) as conn:
        HistoryWriter(conn).write({
            "m": [f"{m}\t{iso(ts)}\t{v!r}\t230.0" for m, ts, v in meters],
            "v": [f"{d}\t{iso(ts)}\t50.0\t{v!r}\t{t!r}" for d, ts, v, t in vehicles],
        })


def fold(settings):
    return rollups.maintain(settings, 0)


def rollup_rows(db):
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in ("meter_hourly_rollups", "vehicle_hourly_rollups")}


PRIOR_SUMS = {"meter_hourly_rollups": ("readings", "energy_kwh", "counter_resets", "glitches", "implausible_steps"),
              "vehicle_hourly_rollups": ("readings", "energy_kwh", "counter_resets", "glitches", "implausible_steps",
                                         "battery_temp_sum")}


def assert_prior_sums_hold(db):
    """Every row's prior sums are the previous row's plus its values (migration 0013), none missing."""
    for table, columns in PRIOR_SUMS.items():
        device = table.split("_")[0] + "_id"
        checks = " OR ".join(f"prior_{c} IS DISTINCT FROM coalesce(lag(prior_{c} + {c}) OVER w, prior_{c})"
                             for c in columns)
        bad = db.execute(
            f"SELECT * FROM (SELECT {device}, hour, ({checks}) OR prior_readings IS NULL AS bad FROM {table} "
            f"WINDOW w AS (PARTITION BY {device} ORDER BY hour)) x WHERE bad LIMIT 5").fetchall()
        assert not bad, (table, bad)


counter_step = st.one_of(
    st.integers(min_value=0, max_value=800).map(lambda wh: ("up", wh)),   # ordinary charging, in Wh
    st.just(("zero", 0)),                                                # a placeholder zero (glitch or reset)
    st.just(("huge", 0)),                                                # an implausible jump
)


def series(rng_steps, start_wh, minutes):
    """Counter values (kWh) at the given minute offsets following the scripted steps."""
    out, total = [], start_wh
    for minute, (what, wh) in zip(minutes, rng_steps, strict=False):
        if what == "up":
            total += wh
            value = total
        elif what == "zero":
            value = 0
        else:
            value = total + 10**9
        out.append((BASE + timedelta(minutes=minute, seconds=7), value / 1000))
    return out


@PROFILE
@given(
    minutes=st.lists(st.integers(min_value=0, max_value=8 * 60), min_size=2, max_size=60, unique=True),
    meter_steps=st.lists(counter_step, min_size=60, max_size=60),
    vehicle_steps=st.lists(counter_step, min_size=60, max_size=60),
    batches=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=10**6),
    windows=st.lists(st.tuples(st.integers(min_value=-90, max_value=9 * 60), st.integers(min_value=1, max_value=10)),
                     min_size=1, max_size=4),
)
def test_rollup_answers_equal_raw_under_shuffled_late_repeated_delivery(
        client, db, settings, minutes, meter_steps, vehicle_steps, batches, seed, windows):
    rng = random.Random(seed)
    suffix = f"{seed}-{len(minutes)}-{batches}"
    meter_id, vehicle_id = f"m-{suffix}", f"v-{suffix}"
    client.post("/v1/mappings", json={"vehicleId": vehicle_id, "meterId": meter_id})
    meter = [(meter_id, ts, v) for ts, v in series(meter_steps, 10_000, sorted(minutes))]
    vehicle_series = series(vehicle_steps, 5_000, sorted(minutes))
    vehicle = [(vehicle_id, ts, v, 20.0 + (i % 7)) for i, (ts, v) in enumerate(vehicle_series)]
    # Shuffled delivery in batches, each batch repeated now and then; maintenance between some batches.
    readings = [("m", r) for r in meter] + [("v", r) for r in vehicle]
    rng.shuffle(readings)
    chunks = [readings[i::batches] for i in range(batches)]
    for chunk in chunks:
        for _ in range(2 if rng.random() < 0.3 else 1):
            write(settings, [r for k, r in chunk if k == "m"], [r for k, r in chunk if k == "v"])
        if rng.random() < 0.6:
            fold(settings)
    def check():
        for start_min, hours in windows:
            from_ts = BASE + timedelta(minutes=start_min)
            to_ts = from_ts + timedelta(hours=hours)
            assert endpoint_answer(client, vehicle_id, from_ts, to_ts) == raw_answer(db, settings, vehicle_id,
                                                                                     from_ts, to_ts)
            aligned = BASE + timedelta(hours=start_min // 60 + 1)
            assert endpoint_answer(client, vehicle_id, aligned, aligned + timedelta(hours=hours)) == raw_answer(
                db, settings, vehicle_id, aligned, aligned + timedelta(hours=hours))
    check()  # exact also with marks pending (those hours are read raw)
    fold(settings)
    assert db.execute("SELECT count(*) FROM rollup_marks").fetchone()[0] == 0
    assert_prior_sums_hold(db)
    check()
    check_fleet_ranking(client, db, settings, vehicle_id, windows)
    # Folding everything again from scratch (the rebuild) changes nothing.
    before = rollup_rows(db)
    rollups.rebuild(settings, (BASE - timedelta(days=1)).date(), (BASE + timedelta(days=1)).date())
    assert rollup_rows(db) == before


def check_fleet_ranking(client, db, settings, vehicle_id, windows):
    """The ranking's row of the vehicle equals the raw answer, and the ranking is in efficiency order."""
    for start_min, hours in windows:
        from_ts = BASE + timedelta(hours=start_min // 60 + 1)
        to_ts = from_ts + timedelta(hours=hours)
        r = client.get("/v1/analytics/vehicles", query_string={"hours": hours, "to": iso(to_ts), "limit": 1000})
        assert r.status_code == 200, r.get_json()
        rows = r.get_json()["vehicles"]
        assert {row["vehicleId"]: row for row in rows}[vehicle_id] == raw_answer(db, settings, vehicle_id, from_ts,
                                                                                to_ts)
        keys = [(row["efficiencyRatio"] is None, row["efficiencyRatio"] or 0.0, row["vehicleId"]) for row in rows]
        assert keys == sorted(keys)


# Gaps between readings: mostly a minute or a few, sometimes across counter_steps()'s 7-day neighbourhood.
reading_gap = st.one_of(st.integers(min_value=1, max_value=5), st.integers(min_value=60, max_value=400),
                        st.integers(min_value=166 * 60, max_value=170 * 60))


RULE_COLUMNS = "device_id, ts, kwh, energy_kwh, is_glitch, is_reset, is_implausible, predecessor_ts"


@PROFILE
@given(
    devices=st.lists(st.tuples(st.lists(st.tuples(reading_gap, counter_step), min_size=1, max_size=10),
                               st.integers(min_value=0, max_value=14), st.integers(min_value=0, max_value=14)),
                     min_size=1, max_size=4),
    kind=st.sampled_from(["meter", "vehicle"]),
)
def test_counter_steps_batch_equals_counter_steps(db, settings, devices, kind):
    """One rule set: the batch form (migration 0011) answers what counter_steps() answers, device by device."""
    start = BASE - timedelta(days=80)  # 10 gaps of at most 170 h stay inside the partitions
    ids, windows = [], []
    for n, (steps, from_index, to_index) in enumerate(devices):
        device_id = f"{kind[0]}-batch-{n}"
        minute, total, rows = 0, 1_000, []
        for gap, (what, wh) in steps:
            minute += gap
            total += wh if what == "up" else 0
            value = {"up": total, "zero": 0, "huge": total + 10**9}[what] / 1000
            rows.append((device_id, start + timedelta(minutes=minute, seconds=7), value))
        if kind == "meter":
            write(settings, rows)
        else:
            write(settings, vehicles=[(d, ts, v, 20.0) for d, ts, v in rows])
        times = [r[1] for r in rows]
        lo, hi = sorted((from_index, to_index))
        from_ts = times[min(lo, len(times) - 1)] - timedelta(seconds=1 if from_index % 2 else 0)
        to_ts = times[min(hi, len(times) - 1)] + timedelta(seconds=1 if to_index % 2 else 0)
        ids.append(device_id)
        windows.append((from_ts, max(to_ts, from_ts)))
    power = settings.max_meter_power_kw if kind == "meter" else settings.max_vehicle_power_kw

    def one_by_one():
        return sorted((d, *row) for d, (f, t) in zip(ids, windows, strict=True) for row in db.execute(
            "SELECT * FROM counter_steps(%s, %s, %s, %s, %s)", (kind, d, f, t, power)))

    def batch(look_after, known=None, columns=RULE_COLUMNS):
        return sorted(db.execute(
            f"SELECT {columns} FROM counter_steps_batch(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (kind, ids, [w[0] for w in windows], [w[1] for w in windows], min(w[0] for w in windows),
             max(w[1] for w in windows), power, look_after, *(known or (None, None, None)))).fetchall())

    assert batch(True) == one_by_one()
    # The tail cache's form (migration 0012): the 2 readings before each from_ts given as values.
    table, column = ("meter_readings", "meter_id") if kind == "meter" else ("vehicle_readings", "vehicle_id")
    value = "kwh_consumed_ac" if kind == "meter" else "kwh_delivered_dc"
    known = [(d, *row) for d, (f, _) in zip(ids, windows, strict=True) for row in db.execute(
        f"SELECT ts, {value} FROM {table} WHERE {column} = %s AND ts <= %s ORDER BY ts DESC LIMIT 2", (d, f))]
    known_arrays = ([k[0] for k in known], [k[1] for k in known], [k[2] for k in known])
    assert batch(True, known_arrays, "*") == batch(True, None, "*")
    # prev_* are each reading's raw neighbours before it, where the series read reaches them.
    history = {d: [r[0] for r in db.execute(f"SELECT ts FROM {table} WHERE {column} = %s ORDER BY ts", (d,))]
               for d in ids}
    for row in batch(True, None, "device_id, ts, prev_ts, prev2_ts"):
        before = [ts for ts in history[row[0]] if ts < row[1]][-2:][::-1]
        known_before = [ts for ts in row[2:] if ts is not None]
        assert row[2] is not None or row[3] is None
        assert known_before == before[:len(known_before)]
    # look_after false: as if no reading came after each device's window.
    without_after = batch(False)
    with db.transaction(force_rollback=True):
        for d, (_, t) in zip(ids, windows, strict=True):
            db.execute(f"DELETE FROM {table} WHERE {column} = %s AND ts > %s", (d, t))
        assert without_after == one_by_one()


def tail_of(db, meter_id):
    return db.execute("SELECT last_ts, prev_ts, prev_kwh, prev2_ts, prev2_kwh FROM rollup_tails "
                      "WHERE kind = 'meter' AND device_id = %s", (meter_id,)).fetchone()


def test_tail_cache_holds_the_two_readings_before_the_frontier(db, settings):
    """The in-order fold keeps each device's newest reading and the 2 before it (migration 0012)."""
    times = [BASE + timedelta(minutes=m) for m in (1, 2, 3, 5, 8)]
    for i, ts in enumerate(times):
        write(settings, [("m-tail", ts, 10.0 + i)])
        fold(settings)
        if i >= 2:
            assert tail_of(db, "m-tail") == (ts, times[i - 1], 9.0 + i, times[i - 2], 8.0 + i)


def test_late_reading_before_the_frontier_replaces_a_stale_tail(db, settings):
    """A late reading between the frontier and its predecessor: the recompute drops the tail, and the
    next in-order fold judges from raw history again (with the stale tail, the frontier's drop from
    100 to 50 would still be a reset and its step from the late 40 would be lost)."""
    times = [BASE + timedelta(minutes=m) for m in (0, 10, 20, 30)]
    write(settings, [("m-stale", ts, v) for ts, v in zip(times, (98.0, 99.0, 100.0, 50.0), strict=True)])
    fold(settings)
    assert tail_of(db, "m-stale")[0] == times[-1]
    write(settings, [("m-stale", times[-1] - timedelta(minutes=1), 40.0)])  # late: the reset was here
    fold(settings)
    assert tail_of(db, "m-stale") is None
    write(settings, [("m-stale", times[-1] + timedelta(minutes=10), 60.0)])
    fold(settings)
    assert tail_of(db, "m-stale")[1:3] == (times[-1], 50.0)
    incremental = rollup_rows(db)
    rows = incremental["meter_hourly_rollups"]
    assert (sum(r[3] for r in rows), sum(r[4] for r in rows)) == (22, 1)  # 98 -> 100, 40 -> 60; one reset
    rollups.rebuild(settings, (BASE - timedelta(days=1)).date(), (BASE + timedelta(days=1)).date())
    assert rollup_rows(db) == incremental


def test_a_backfill_of_older_days_keeps_the_tail(db, settings):
    """Late readings far before the frontier change neither its 2 readings before nor the frontier."""
    recent = [BASE + timedelta(hours=30 + h) for h in range(5)]  # the span ends at the 2nd: hour 31
    write(settings, [("m-backfill", ts, 500.0 + i) for i, ts in enumerate(recent)])
    fold(settings)
    tail = tail_of(db, "m-backfill")
    write(settings, [("m-backfill", BASE + timedelta(minutes=m), 100.0 + m) for m in range(30)])
    assert fold(settings)["late"] == 1
    assert tail_of(db, "m-backfill") == tail
    write(settings, [("m-backfill", recent[-1] + timedelta(minutes=10), 510.0)])
    fold(settings)
    incremental = rollup_rows(db)
    rollups.rebuild(settings, (BASE - timedelta(days=1)).date(), (BASE + timedelta(days=2)).date())
    assert rollup_rows(db) == incremental


def test_the_job_vacuums_the_tables_it_churns(db, settings):
    """Each reading leaves a dead mark, tail and frontier version: the job vacuums them itself."""
    write(settings, [("m-vacuum", BASE + timedelta(minutes=i), float(i)) for i in range(1, 5)])
    fold(settings)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rollups.vacuum_churned_tables(conn)
        conn.execute("SET stats_fetch_consistency = none")
        vacuumed = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL "
            "AND relname IN ('rollup_marks', 'rollup_tails')")}
    assert vacuumed == {"rollup_marks", "rollup_tails"}


def test_jobs_shorter_than_the_vacuum_interval_still_vacuum(db, settings):
    """The interval is kept by the server (the last VACUUM, any job's), not by a job that ends before it is up."""
    write(settings, [("m-vacuum-2", BASE + timedelta(minutes=i), float(i)) for i in range(1, 5)])
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET stats_fetch_consistency = none")

        def last_vacuum():
            return conn.execute("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'rollup_marks'"
                                ).fetchone()[0]

        rollups.vacuum_churned_tables(conn)
        first = last_vacuum()
        rollups.maintain(replace(settings, rollup_vacuum_seconds=3600), 0)  # not due: no VACUUM
        assert last_vacuum() == first
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while conn.execute("SELECT now() - %s < interval '1 second'", (first,)).fetchone()[0]:
            assert datetime.now(UTC) < deadline, "the server's clock did not move"
            time.sleep(0.05)
        rollups.maintain(replace(settings, rollup_vacuum_seconds=1), 0)  # a new job, due: it vacuums
        assert last_vacuum() > first


def test_the_fold_waits_while_the_drain_is_behind(db, settings, redis_client, redis_keys):
    """History first: an unwritten reading older than ROLLUP_DEFER_LAG_SECONDS holds the fold back, not forever."""
    from common.streams import CONSUMER_GROUP

    write(settings, [("m-defer", BASE + timedelta(minutes=i), float(i)) for i in range(1, 5)])
    stream = redis_keys.stream(0)
    redis_client.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    old = int(time.time() * 1000) - 60_000  # accepted a minute ago, not yet drained
    redis_client.xadd(stream, {"m": "m-other\t2026-01-01T00:00:00+00:00\t1.0\t230.0"}, id=f"{old}-0")
    marks = "SELECT count(*) FROM rollup_marks WHERE device_id = 'm-defer'"
    waiting = rollups.DrainFirst(redis_client, replace(settings, rollup_defer_lag_seconds=10))
    assert rollups.maintain(settings, 0, drain_first=waiting)["deferred"] == 1
    assert db.execute(marks).fetchone()[0] > 0
    # Delivered and still pending counts as unwritten too.
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {stream: ">"}, count=1)
    assert rollups.maintain(settings, 0, drain_first=waiting)["deferred"] == 1
    # A drain less far behind than the setting does not hold the fold back.
    patient = rollups.DrainFirst(redis_client, replace(settings, rollup_defer_lag_seconds=120))
    assert rollups.maintain(settings, 0, drain_first=patient)["deferred"] == 0
    assert db.execute(marks).fetchone()[0] == 0
    # Marks that waited ROLLUP_MAX_DEFER_SECONDS are folded though the drain is still behind.
    write(settings, [("m-defer", BASE + timedelta(minutes=10), 10.0)])
    db.execute("UPDATE rollup_marks SET marked_at = now() - interval '1 hour'")
    assert rollups.maintain(settings, 0, drain_first=waiting)["deferred"] == 0
    assert db.execute(marks).fetchone()[0] == 0


def test_the_fold_waits_while_a_drain_says_it_is_behind(db, settings, redis_client):
    """A drain whose read came back full holds the fold back, though its oldest unwritten reading is recent."""
    from common.streams import DRAIN_BEHIND_KEY

    write(settings, [("m-behind", BASE + timedelta(minutes=i), float(i)) for i in range(1, 5)])
    marks = "SELECT count(*) FROM rollup_marks WHERE device_id = 'm-behind'"
    first = rollups.DrainFirst(redis_client, replace(settings, rollup_defer_lag_seconds=120))
    redis_client.set(DRAIN_BEHIND_KEY, "a-drain", px=60_000)
    assert rollups.maintain(settings, 0, drain_first=first)["deferred"] == 1
    assert db.execute(marks).fetchone()[0] > 0
    # ROLLUP_DEFER_LAG_SECONDS=0 turns holding back off altogether.
    never = rollups.DrainFirst(redis_client, replace(settings, rollup_defer_lag_seconds=0))
    assert rollups.maintain(settings, 0, drain_first=never)["deferred"] == 0
    assert db.execute(marks).fetchone()[0] == 0
    # The signal gone, the fold goes on.
    write(settings, [("m-behind", BASE + timedelta(minutes=10), 10.0)])
    redis_client.delete(DRAIN_BEHIND_KEY)
    assert rollups.maintain(settings, 0, drain_first=first)["deferred"] == 0
    assert db.execute(marks).fetchone()[0] == 0


def test_late_reading_three_days_back_changes_exactly_its_hours(client, db, settings):
    start = BASE.replace(hour=0) - timedelta(days=1)
    meter = [("m-late", start + timedelta(minutes=10 * i), 100 + i) for i in range(6 * 24 * 4)]
    write(settings, meter)
    fold(settings)
    figures = "SELECT * FROM meter_hourly_rollups WHERE meter_id = 'm-late'"
    before = {r[1]: r[:-len(PRIOR_SUMS["meter_hourly_rollups"])] for r in db.execute(figures)}
    # A placeholder zero three days back, between two readings: a glitch in its hour.
    late_ts = start + timedelta(hours=5, minutes=15)
    write(settings, [("m-late", late_ts, 0.0)])
    fold(settings)
    after = {r[1]: r[:-len(PRIOR_SUMS["meter_hourly_rollups"])] for r in db.execute(figures)}
    changed = {h for h in after if after[h] != before.get(h)}
    assert changed == {start + timedelta(hours=5)}
    assert after[start + timedelta(hours=5)][5] == 1  # glitches
    # The later hours' prior sums (not figures of theirs) count the one more reading.
    assert_prior_sums_hold(db)


def test_marks_survive_a_crash_between_marking_and_folding(db, settings):
    write(settings, [("m-crash", BASE + timedelta(minutes=i), float(i)) for i in range(1, 5)])
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("SELECT * FROM rollup_marks FOR UPDATE")
        with pytest.raises(RuntimeError), conn.transaction():
            rollups.maintain_once(conn, settings, 100)
            raise RuntimeError("the job dies before its commit")
    assert db.execute("SELECT count(*) FROM rollup_marks").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM meter_hourly_rollups").fetchone()[0] == 0
    fold(settings)
    assert db.execute("SELECT sum(readings) FROM meter_hourly_rollups").fetchone()[0] == 4


def test_two_maintenance_jobs_at_once_produce_the_same_rollups(db, settings):
    rng = random.Random(7)
    rows = []
    for d in range(40):
        total = 0.0
        for i in range(120):
            total += rng.choice([0.0, 0.5, 1.25])
            rows.append((f"m-par-{d}", BASE + timedelta(minutes=i), total))
    rng.shuffle(rows)
    for i in range(0, len(rows), 300):
        write(settings, rows[i:i + 300])
    threads = [threading.Thread(target=fold, args=(settings,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fold(settings)
    assert_prior_sums_hold(db)
    concurrent = rollup_rows(db)
    rollups.rebuild(settings, (BASE - timedelta(days=1)).date(), (BASE + timedelta(days=1)).date())
    assert rollup_rows(db) == concurrent


def _fleet_fixture(client, settings):
    """Three vehicles, two sharing a meter, with a reset and a glitch; folded."""
    start = BASE - timedelta(hours=2)
    meters, vehicles = [], []
    for i in range(1, 4 * 60):
        ts = start + timedelta(minutes=i)
        meters.append(("m-fa", ts, 1000 + i * 0.5 if i != 100 else 0.0))  # a glitch at 100
        meters.append(("m-fb", ts, 10 + i * 0.25 if i < 150 else i * 0.25 - 30))  # a reset at 150
        vehicles.append(("v-fa1", ts, 500 + i * 0.2, 25.0 + i % 3))
        vehicles.append(("v-fa2", ts, 800 + i * 0.1, 30.0))
        vehicles.append(("v-fb", ts, 50 + i * 0.2, 20.0))
    write(settings, meters, vehicles)
    for vehicle, meter in (("v-fa1", "m-fa"), ("v-fa2", "m-fa"), ("v-fb", "m-fb"), ("v-none", "m-none")):
        client.post("/v1/mappings", json={"vehicleId": vehicle, "meterId": meter})
    fold(settings)
    return BASE + timedelta(hours=2)


def test_fleet_summary_and_ranking_equal_the_raw_computation(client, db, settings):
    to_ts = _fleet_fixture(client, settings)
    from_ts = to_ts - timedelta(hours=3)
    fleet = client.get("/v1/analytics/fleet", query_string={"hours": 3, "to": iso(to_ts)}).get_json()
    raw = {v: raw_answer(db, settings, v, from_ts, to_ts) for v in ("v-fa1", "v-fa2", "v-fb", "v-none")}
    exact = {kind: db.execute(
        "SELECT sum(s.energy_kwh::numeric)::float8 FROM unnest(%s::text[]) d(id), "
        "LATERAL counter_steps(%s, d.id, %s, %s, %s) s",
        (ids, kind, from_ts, to_ts, power)).fetchone()[0]
        for kind, ids, power in (("meter", ["m-fa", "m-fb", "m-none"], settings.max_meter_power_kw),
                                 ("vehicle", list(raw), settings.max_vehicle_power_kw))}
    assert fleet["acKwh"] == round(exact["meter"], 3)  # m-fa once, though it feeds two vehicles
    assert fleet["dcKwh"] == round(exact["vehicle"], 3)
    assert fleet["vehicles"] == 4 and fleet["meters"] == 3
    assert fleet["glitches"]["meter"] == 1 and fleet["counterResets"]["meter"] == 1
    assert (fleet["fromTs"], fleet["toTs"]) == (iso(from_ts), iso(to_ts))
    ratios = sorted(a["efficiencyRatio"] for a in raw.values() if a["efficiencyRatio"] is not None)
    assert fleet["efficiencyPercentiles"]["p50"] == ratios[1]
    assert fleet["asOf"]
    ranking = client.get("/v1/analytics/vehicles", query_string={
        "hours": 3, "to": iso(to_ts), "sort": "dcKwh", "order": "desc", "limit": 2}).get_json()
    second = client.get("/v1/analytics/vehicles", query_string={
        "hours": 3, "sort": "dcKwh", "order": "desc", "limit": 2, "cursor": ranking["next"]}).get_json()
    rows = ranking["vehicles"] + second["vehicles"]
    assert second["next"] is None
    assert [r["vehicleId"] for r in rows] == sorted(raw, key=lambda v: (-raw[v]["dcKwh"], v))
    for row in rows:
        assert row == raw[row["vehicleId"]]


def test_fleet_windows_wider_than_the_data_equal_the_raw_computation(client, db, settings):
    """The window's first and last hours hold no row (a dashboard's current hour): the anchors move inside."""
    to_ts = _fleet_fixture(client, settings) + timedelta(hours=3)
    from_ts = to_ts - timedelta(hours=8)
    ranking = client.get("/v1/analytics/vehicles", query_string={"hours": 8, "to": iso(to_ts), "limit": 10})
    assert ranking.status_code == 200, ranking.get_json()
    rows = ranking.get_json()["vehicles"]
    assert len(rows) == 4
    for row in rows:
        assert row == raw_answer(db, settings, row["vehicleId"], from_ts, to_ts)
    fleet = client.get("/v1/analytics/fleet", query_string={"hours": 8, "to": iso(to_ts)}).get_json()
    exact = db.execute("SELECT sum(s.energy_kwh::numeric) FROM unnest(%s::text[]) d(id), "
                       "LATERAL counter_steps('vehicle', d.id, %s, %s, %s) s",
                       ([row["vehicleId"] for row in rows], from_ts, to_ts,
                        settings.max_vehicle_power_kw)).fetchone()[0]
    assert fleet["dcKwh"] == float(exact.quantize(Decimal("0.001"), ROUND_HALF_UP))


def test_fleet_rows_of_devices_missing_from_the_anchor_hours_equal_the_raw_computation(client, db, settings):
    """A vehicle and a meter with no row in the window's first or last hour that holds rows take their own."""
    _fleet_fixture(client, settings)
    start = BASE - timedelta(hours=2)
    # v-mid reports only in the middle of the fixture's four hours, m-late from its second hour on.
    write(settings, [("m-late", start + timedelta(minutes=i), 5 + i * 0.3) for i in range(70, 4 * 60)],
          [("v-mid", start + timedelta(minutes=i), 40 + i * 0.1, 22.0) for i in range(75, 170)])
    client.post("/v1/mappings", json={"vehicleId": "v-mid", "meterId": "m-late"})
    fold(settings)
    for hours in (3, 4):
        to_ts = BASE + timedelta(hours=2)
        rows = client.get("/v1/analytics/vehicles", query_string={"hours": hours, "to": iso(to_ts),
                                                                  "limit": 10}).get_json()["vehicles"]
        assert {row["vehicleId"] for row in rows} >= {"v-mid", "v-fa1"}
        for row in rows:
            assert row == raw_answer(db, settings, row["vehicleId"], to_ts - timedelta(hours=hours), to_ts)
        fleet = client.get("/v1/analytics/fleet", query_string={"hours": hours, "to": iso(to_ts)}).get_json()
        exact = db.execute("SELECT sum(s.energy_kwh::numeric) FROM unnest(%s::text[]) d(id), "
                           "LATERAL counter_steps('vehicle', d.id, %s, %s, %s) s",
                           ([row["vehicleId"] for row in rows], to_ts - timedelta(hours=hours), to_ts,
                            settings.max_vehicle_power_kw)).fetchone()[0]
        assert fleet["dcKwh"] == float(exact.quantize(Decimal("0.001"), ROUND_HALF_UP))


def test_rollup_rows_are_rewritten_in_place(db):
    """The fold rewrites frontier rows and tails every second: their pages keep room for it (0014)."""
    db.execute("SELECT create_daily_partitions('vehicle_hourly_rollups', '2031-01-01', '2031-01-01')")
    options = dict(db.execute(
        "SELECT relname, reloptions FROM pg_class WHERE relname IN "
        "('vehicle_hourly_rollups_20310101', 'rollup_tails')").fetchall())
    assert options == {"vehicle_hourly_rollups_20310101": ["fillfactor=50"], "rollup_tails": ["fillfactor=50"]}
    db.execute("DROP TABLE vehicle_hourly_rollups_20310101")


def test_fleet_queries_are_checked(client, auth):
    for path, query, parameter in (
            ("/v1/analytics/fleet", {"hours": 0}, "hours"),
            ("/v1/analytics/fleet", {"hours": 24 * 91}, "hours"),
            ("/v1/analytics/fleet", {"to": "2026-01-01T10:30:00+00:00"}, "to"),
            ("/v1/analytics/vehicles", {"sort": "soc"}, "sort"),
            ("/v1/analytics/vehicles", {"limit": 1001}, "limit"),
            ("/v1/analytics/vehicles", {"cursor": "forged.cursor"}, "cursor"),
            ("/v1/devices/silent", {"kind": "toaster"}, "kind"),
            ("/v1/devices/silent", {"kind": "vehicle", "for": "soon"}, "for"),
            ("/v1/devices/silent", {"kind": "vehicle", "cursor": "x.y"}, "cursor")):
        r = client.get(path, query_string=query)
        assert r.status_code == 400, (path, query)
        assert r.get_json()["parameter"] == parameter
    device = auth.create_key(device="vehicle:v-1")
    for path in ("/v1/analytics/fleet", "/v1/analytics/vehicles", "/v1/devices/silent?kind=vehicle"):
        assert client.get(path, headers=auth.headers(device)).status_code == 403
        assert client.get(path, headers={"Authorization": ""}).status_code == 401
    ingest_only = auth.create_key(scopes=["ingest"])
    assert client.get("/v1/analytics/fleet", headers=auth.headers(ingest_only)).status_code == 403


def test_fleet_summary_reads_rollups_not_raw_history(db, settings):
    to_ts = BASE
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN " + __import__("common.database", fromlist=["load_sql"]).load_sql("fleet/vehicles"),
        {"from_ts": to_ts - timedelta(hours=24), "to_ts": to_ts, "last_hour": to_ts - timedelta(hours=1),
         "v_first_hour": to_ts - timedelta(hours=24), "v_last_hour": to_ts - timedelta(hours=1),
         "m_first_hour": to_ts - timedelta(hours=24), "m_last_hour": to_ts - timedelta(hours=1)}).fetchall())
    assert "hourly_rollups" in plan
    assert "meter_readings" not in plan and "vehicle_readings" not in plan


def test_silent_devices_come_and_go(client, redis_client, settings):
    now = datetime.now(UTC).replace(microsecond=0)
    def send(vehicle_id, ts):
        r = client.post("/v1/telemetry", json={"vehicleId": vehicle_id, "soc": 50.0, "kwhDeliveredDc": 1.0,
                                               "batteryTemp": 20.0, "timestamp": iso(ts)})
        assert r.status_code == 202
    send("v-quiet", now - timedelta(minutes=30))
    send("v-chatty", now - timedelta(minutes=1))
    for i in range(5):
        send(f"v-old-{i}", now - timedelta(hours=2, minutes=i))
    body = client.get("/v1/devices/silent", query_string={"kind": "vehicle", "for": "15m"}).get_json()
    ids = [d["id"] for d in body["devices"]]
    assert ids == ["v-old-4", "v-old-3", "v-old-2", "v-old-1", "v-old-0", "v-quiet"]  # oldest first
    assert body["devices"][-1] == {"id": "v-quiet", "kind": "vehicle",
                                   "lastTimestamp": iso(now - timedelta(minutes=30))}
    # Pages: every silent device once.
    seen, cursor = [], None
    while True:
        page = client.get("/v1/devices/silent", query_string={"kind": "vehicle", "for": "15m", "limit": 2,
                                                             **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [d["id"] for d in page["devices"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == ids
    # An old reading arriving late does not make it look alive; a new one does.
    def silent_ids():
        return [d["id"] for d in client.get("/v1/devices/silent?kind=vehicle&for=15m").get_json()["devices"]]
    send("v-quiet", now - timedelta(minutes=40))
    assert "v-quiet" in silent_ids()
    send("v-quiet", now)
    assert "v-quiet" not in silent_ids()
    assert client.get("/v1/devices/silent?kind=meter").get_json()["devices"] == []
    metrics_text = client.get("/metrics").get_data(as_text=True)
    assert 'energy_devices_silent{kind="vehicle"} 5.0' in metrics_text

"""EXPLAIN ANALYZE of the analytics queries: only the partitions of the window and of the baseline are scanned."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from common.database import load_sql
from common.settings import Settings
from web.analytics import fetch_window, window_params

MIDNIGHT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DEVICES = 30
DAYS = 6  # readings on the 6 days before today

PARAM_TYPES = {"vehicle_id": "text", "meter_id": "text", "from_ts": "timestamptz", "to_ts": "timestamptz",
               "max_meter_power_kw": "float8", "max_vehicle_power_kw": "float8"}
QUERIES = ["analytics/meter_energy", "analytics/vehicle_energy"]
# psycopg prepares a statement after a few runs on one pooled connection, and Postgres may then use a
# generic plan whose partitions are pruned at executor start instead of at planning: check both.
PLAN_MODES = ["force_custom_plan", "force_generic_plan"]


def day(n: int) -> datetime:
    """Return 00:00 UTC of the day ``n`` days before today."""
    return MIDNIGHT - timedelta(days=n)


@pytest.fixture
def history(db):
    """Readings at :05 and :35 of every hour for DEVICES meters and vehicles over DAYS days, vacuumed."""
    start, end = day(DAYS), MIDNIGHT
    db.execute(
        """INSERT INTO meter_readings
           SELECT 'm' || d, ts, extract(epoch FROM ts - %(start)s) / 3600, 230
           FROM generate_series(%(start)s + interval '5 minutes', %(end)s, interval '30 minutes') ts,
                generate_series(1, %(devices)s) d""",
        {"start": start, "end": end, "devices": DEVICES},
    )
    db.execute(
        """INSERT INTO vehicle_readings
           SELECT 'v' || d, ts, 50, extract(epoch FROM ts - %(start)s) / 4000, 25
           FROM generate_series(%(start)s + interval '5 minutes', %(end)s, interval '30 minutes') ts,
                generate_series(1, %(devices)s) d""",
        {"start": start, "end": end, "devices": DEVICES},
    )
    db.execute("INSERT INTO vehicle_meter_map (vehicle_id, meter_id) VALUES ('v7', 'm7')")
    db.execute("VACUUM ANALYZE meter_readings, vehicle_readings")  # sets the visibility map, as autovacuum would
    return db


def scanned_partitions(db, name: str, params: dict) -> tuple[set[str], set[str], list[str]]:
    """Return (partitions executed, partitions in the plan but never executed, scan node types on history).

    The query runs as a prepared statement, as psycopg runs it once a pooled connection has seen it a few times.
    """
    text = load_sql(name)
    used = [p for p in PARAM_TYPES if f"%({p})s" in text]
    for number, param in enumerate(used, start=1):
        text = text.replace(f"%({param})s", f"${number}")
    db.execute("DEALLOCATE ALL")
    db.execute(f"PREPARE analytics_q ({', '.join(PARAM_TYPES[p] for p in used)}) AS {text}")
    # EXECUTE takes literals: a client-side cursor inlines the values.
    plan = psycopg.ClientCursor(db).execute(
        f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE analytics_q ({', '.join(['%s'] * len(used))})",
        [params[p] for p in used],
    ).fetchone()[0][0]["Plan"]
    executed, idle, scans = set(), set(), []
    stack = [plan]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        relation = node.get("Relation Name", "")
        if relation.startswith(("meter_readings_", "vehicle_readings_")):
            (executed if node["Actual Loops"] > 0 else idle).add(relation)
            scans.append(node["Node Type"])
    return executed, idle, scans


def partitions(table: str, *days_before_today: int) -> set[str]:
    return {f"{table}_{day(n):%Y%m%d}" for n in days_before_today}


@pytest.fixture(params=PLAN_MODES)
def plan_mode(request, history):
    history.execute(f"SET plan_cache_mode = {request.param}")
    yield request.param
    history.execute("RESET plan_cache_mode")


@pytest.mark.parametrize("query", QUERIES)
def test_baseline_in_the_previous_partition_scans_only_that_one_and_the_window(history, plan_mode, query):
    table = "meter_readings" if "meter" in query else "vehicle_readings"
    # Window (day 3 00:00, day 3 12:00]: the baseline is day 4 23:35, in the partition before the window's.
    params = window_params("v7", "m7", day(3), day(3) + timedelta(hours=12), Settings())
    executed, idle, scans = scanned_partitions(history, query, params)
    # The next reading after the window (day 3 12:05) is in the window's partition: the look ahead stops there.
    assert executed == partitions(table, 3, 4)
    # The older partitions inside the lookback and the later ones inside the look ahead are in the plan but
    # never executed.
    assert partitions(table, 5, 6) <= idle
    assert partitions(table, 2, 1, 0) <= idle
    # The covering primary key (sql/migrations/0004) serves every read without touching the heap.
    assert set(scans) == {"Index Only Scan"}


@pytest.mark.parametrize("query", QUERIES)
def test_window_across_midnight_scans_its_two_partitions_only(history, plan_mode, query):
    table = "meter_readings" if "meter" in query else "vehicle_readings"
    params = window_params("v7", "m7", day(3) + timedelta(hours=18), day(2) + timedelta(hours=6), Settings())
    executed, idle, scans = scanned_partitions(history, query, params)
    # The baseline (day 3 17:35) is in the window's first partition, the next reading (day 2 06:05) in its last.
    assert executed == partitions(table, 3, 2)
    assert partitions(table, 1, 0) <= idle
    assert set(scans) == {"Index Only Scan"}


def test_the_explained_queries_give_the_expected_figures(history, settings):
    """The same parameters through the app's own pipeline: 12 h of a counter rising 1 kWh an hour."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        meter_row, vehicle_row = fetch_window(
            conn, window_params("v7", "m7", day(3), day(3) + timedelta(hours=12), Settings())
        )
    meter_id, energy, resets, glitches, implausible, readings, baseline_ts = meter_row
    assert (meter_id, resets, glitches, implausible, readings) == ("m7", 0, 0, 0, 24)
    assert baseline_ts == day(3) - timedelta(minutes=25)
    # Baseline at 23:35 of day 4 to 11:35 of day 3: 12 hours of 1 kWh an hour.
    assert round(energy, 9) == 12.0
    assert vehicle_row[4] == 24

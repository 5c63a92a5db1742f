"""EXPLAIN ANALYZE of the history reads: pages, buckets and CSV never touch the heap (migration 0010)."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from common.database import load_sql

MIDNIGHT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = MIDNIGHT - timedelta(days=4)
END = MIDNIGHT - timedelta(days=1)  # readings go on after the window, as the look ahead expects
PARAM_TYPES = {"device_id": "text", "after_ts": "timestamptz", "from_ts": "timestamptz", "to_ts": "timestamptz",
               "limit": "bigint", "stride": "interval", "daily": "boolean", "tz": "text", "max_power_kw": "float8"}
PARAMS = {"after_ts": START, "from_ts": START, "to_ts": END, "limit": 1001, "stride": timedelta(hours=1),
          "daily": False, "tz": "UTC", "max_power_kw": 4000.0}
QUERIES = [f"history/{kind}_{what}" for kind in ("meter", "vehicle") for what in ("page", "buckets", "csv")]
# psycopg prepares a statement after a few runs on a pooled connection, and Postgres may then keep a generic plan.
PLAN_MODES = ["force_custom_plan", "force_generic_plan"]


@pytest.fixture
def history(db):
    """Readings every 10 minutes of 20 meters and vehicles from a day before the window to yesterday's end, vacuumed.

    The devices' readings interleave on the heap, one page per reading of a device, as in production.
    """
    for table, values in (("meter_readings", "extract(epoch FROM ts - %(start)s) / 3600, 230 + d %% 3"),
                          ("vehicle_readings", "50 + d, extract(epoch FROM ts - %(start)s) / 4000, 25")):
        db.execute(f"INSERT INTO {table} SELECT 'd' || d, ts, {values} "
                   "FROM generate_series(%(start)s - interval '1 day', %(end)s, interval '10 minutes') ts, "
                   "generate_series(1, 20) d", {"start": START, "end": MIDNIGHT - timedelta(minutes=10)})
    db.execute("VACUUM ANALYZE meter_readings, vehicle_readings")  # sets the visibility map, as autovacuum would
    return db


def history_scans(db, name: str) -> list[dict]:
    """Return the executed scan nodes on history partitions of the named statement, run as a prepared statement."""
    text = load_sql(name)
    if text.lstrip().startswith("COPY") or "\nCOPY (" in text:  # the CSV's query is the SELECT inside COPY (...)
        text = text[text.index("COPY (") + len("COPY ("):text.rindex(") TO STDOUT")]
    used = [p for p in PARAM_TYPES if f"%({p})s" in text]
    for number, param in enumerate(used, start=1):
        text = text.replace(f"%({param})s", f"${number}")
    db.execute("DEALLOCATE ALL")
    db.execute(f"PREPARE history_q ({', '.join(PARAM_TYPES[p] for p in used)}) AS {text}")
    params = {**PARAMS, "device_id": "d7"}
    plan = psycopg.ClientCursor(db).execute(
        f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE history_q ({', '.join(['%s'] * len(used))})",
        [params[p] for p in used],
    ).fetchone()[0][0]["Plan"]
    scans, stack = [], [plan]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        if node.get("Relation Name", "").startswith(("meter_readings_", "vehicle_readings_")) and node["Actual Loops"]:
            scans.append(node)
    return scans


@pytest.mark.parametrize("plan_mode", PLAN_MODES)
@pytest.mark.parametrize("query", QUERIES)
def test_history_reads_are_index_only_scans(history, query, plan_mode):
    history.execute(f"SET plan_cache_mode = {plan_mode}")
    try:
        scans = history_scans(history, query)
    finally:
        history.execute("RESET plan_cache_mode")
    assert scans, "the window's partitions were scanned"
    # One heap page per reading was the cost before the keys carried soc and voltage.
    assert {node["Node Type"] for node in scans} == {"Index Only Scan"}, [
        (node["Node Type"], node["Relation Name"], node["Actual Rows"]) for node in scans]
    assert sum(node["Heap Fetches"] for node in scans) == 0

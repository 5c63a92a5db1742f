"""Read energy over a window from the hourly rollups for the whole hours and raw history for the rest.

One vehicle's answer is exact at every moment, also before the maintenance job has run: hours the
vehicle's (or its meter's) pending dirty marks may change are read raw, and everything is read in
one REPEATABLE READ snapshot, so a maintenance commit in between cannot mix two states. The fleet
endpoints (web/fleet.py) read rollups only: they lag by what is not folded yet (``asOf``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from common.database import load_sql, rollup_hour
from common.settings import Settings

HOUR = timedelta(hours=1)
_SPAN_SQL = {
    "meter": "SELECT coalesce((SELECT max(r.ts) FROM meter_readings r WHERE r.meter_id = %(device_id)s "
             "AND r.ts < %(min_ts)s AND r.ts >= counter_shift(%(min_ts)s, -168)), %(min_ts)s)",
    "vehicle": "SELECT coalesce((SELECT max(r.ts) FROM vehicle_readings r WHERE r.vehicle_id = %(device_id)s "
               "AND r.ts < %(min_ts)s AND r.ts >= counter_shift(%(min_ts)s, -168)), %(min_ts)s)",
}


def hour_floor(ts: datetime) -> datetime:
    """Return the whole UTC hour at or before ``ts``."""
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def split_window(from_ts: datetime, to_ts: datetime, dirty_hour: datetime | None) -> tuple[datetime, datetime]:
    """Return (whole_from, whole_to): the run of whole hours inside (from_ts, to_ts] read from rollups.

    The rest, (from_ts, whole_from] and (whole_to, to_ts], is read raw; so are the hours from
    ``dirty_hour`` on (the first bucket pending marks may change).
    """
    whole_from = min(rollup_hour(from_ts) + HOUR, to_ts)
    last = hour_floor(to_ts)
    if dirty_hour is not None:
        last = min(last, dirty_hour)
    return whole_from, max(whole_from, last)


def _dirty_hour(conn: psycopg.Connection, kind: str, device_id: str, pending: datetime | None) -> datetime | None:
    """Return the first bucket the device's pending readings (the oldest at ``pending``) may change."""
    if pending is None:
        return None
    # The reading before the oldest pending one: its contribution may change too (counter_steps()'s j-1).
    before = conn.execute(_SPAN_SQL[kind], {"device_id": device_id, "min_ts": pending}).fetchone()[0]
    return rollup_hour(before)


def fetch_performance(conn: psycopg.Connection, vehicle_id: str, meter_id: str, from_ts: datetime,
                      to_ts: datetime, settings: Settings) -> tuple[tuple, tuple]:
    """Return the (meter row, vehicle row) of a vehicle and its meter over the window, as web/analytics.py wants."""
    try:
        with conn.pipeline():  # BEGIN and the first query in one round trip
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # Planning the window queries' partitions (two counter_steps() calls each) costs more than
            # running them: plan once per connection (prepared, generic; partitions pruned at executor start).
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.execute("SET LOCAL jit = off")  # compiling plans over every partition costs more than running them
            pending = conn.execute(load_sql("analytics/pending_marks"), {"vehicle_id": vehicle_id,
                                                                         "meter_id": meter_id})
        meter_pending, vehicle_pending = pending.fetchone()
        meter_from, meter_to = split_window(from_ts, to_ts, _dirty_hour(conn, "meter", meter_id, meter_pending))
        vehicle_from, vehicle_to = split_window(
            from_ts, to_ts, _dirty_hour(conn, "vehicle", vehicle_id, vehicle_pending))
        with conn.pipeline():
            meter = conn.execute(load_sql("analytics/meter_window"), prepare=True, params={
                "meter_id": meter_id, "from_ts": from_ts, "to_ts": to_ts, "whole_from": meter_from,
                "whole_to": meter_to, "max_meter_power_kw": settings.max_meter_power_kw})
            vehicle = conn.execute(load_sql("analytics/vehicle_window"), prepare=True, params={
                "vehicle_id": vehicle_id, "from_ts": from_ts, "to_ts": to_ts, "whole_from": vehicle_from,
                "whole_to": vehicle_to, "max_vehicle_power_kw": settings.max_vehicle_power_kw})
            conn.execute("COMMIT")
        return meter.fetchone(), vehicle.fetchone()
    except BaseException:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.closed:
            conn.execute("ROLLBACK")
        raise

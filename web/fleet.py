"""GET /v1/analytics/fleet and GET /v1/analytics/vehicles: the whole fleet's figures from hourly rollups.

A fleet window is a run of whole UTC hours (fromTs, toTs]: ``to`` defaults to the end of the current
hour and must otherwise be a whole hour. sql/fleet/vehicles.sql computes every vehicle's figures as the
per-vehicle endpoint states them (web/analytics.py), so the summary is one row and the ranking only
its page, which summarize() turns into answers; the totals are exact (numeric) sums rounded here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import orjson
from flask import Blueprint, current_app, jsonify
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates
from psycopg import sql as psycopg_sql

from common.database import load_sql, rollup_hour
from common.streams import format_ts
from web import db
from web.analytics import DEFAULT_HOURS, MAX_WINDOW_HOURS, _round, check_hours, efficiency, energy_kwh, summarize
from web.errors import ApiError
from web.params import check_in_calendar, parse_query

bp = Blueprint("fleet", __name__)

HOUR = timedelta(hours=1)
MAX_PAGE = 1000
DEFAULT_PAGE = 100
SORT_FIELDS = ("efficiency", "dcKwh", "acKwh", "avgBatteryTemp")


def _whole_hour(value: datetime | None) -> None:
    check_in_calendar(value)
    if value is not None and value.astimezone(UTC) != value.astimezone(UTC).replace(minute=0, second=0,
                                                                                    microsecond=0):
        raise ValidationError("Must be a whole hour (fleet figures are made of hourly rollups).")


class FleetQuerySchema(Schema):
    """The query of GET /v1/analytics/fleet."""

    class Meta:
        unknown = EXCLUDE

    hours = fields.Integer(load_default=DEFAULT_HOURS, validate=validate.Range(min=1, max=MAX_WINDOW_HOURS),
                           metadata={"description": "Window length in whole hours, 1 .. RETENTION_DAYS x 24",
                                     "default": DEFAULT_HOURS})
    to = fields.AwareDateTime(format="iso", load_default=None, metadata={
        "description": "End of the window, a whole hour, ISO-8601 with an offset; default the end of the "
                       "current hour. The window is (to - hours, to]."})

    @validates("to")
    def _to_whole_hour(self, value: datetime | None, data_key: str, **kwargs) -> None:
        _whole_hour(value)


class RankingQuerySchema(FleetQuerySchema):
    """The query of GET /v1/analytics/vehicles."""

    sort = fields.String(load_default="efficiency", validate=validate.OneOf(SORT_FIELDS))
    order = fields.String(load_default="asc", validate=validate.OneOf(("asc", "desc")))
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(min=1, max=MAX_PAGE))
    cursor = fields.String(load_default=None, validate=validate.Length(max=512))


_fleet_schema = FleetQuerySchema()
_ranking_schema = RankingQuerySchema()


def window(query: dict, settings) -> tuple[int, datetime, datetime]:
    """Return (hours, fromTs, toTs) of a fleet query."""
    hours = query["hours"]
    check_hours(hours, settings)
    to_ts = query["to"].astimezone(UTC) if query["to"] else rollup_hour(datetime.now(UTC)) + HOUR
    return hours, to_ts - timedelta(hours=hours), to_ts


def fleet_query(name: str, params: dict) -> tuple[list[tuple], str]:
    """Run sql/fleet/<name>.sql (wrapping sql/fleet/vehicles.sql) over the window; return its rows and asOf."""
    statement = psycopg_sql.SQL(load_sql(f"fleet/{name}")).format(
        vehicles=psycopg_sql.SQL(load_sql("fleet/vehicles")))
    params = {**params, "last_hour": params["to_ts"] - HOUR}

    def read(conn):
        # One snapshot: asOf, the anchors (the first and last hours holding rows) and the rows they anchor.
        with conn.transaction():
            with conn.pipeline():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute("SET LOCAL jit = off")  # JIT compilation of the aggregation cost more than it saved
                as_of = conn.execute(load_sql("fleet/as_of"))
                anchors = conn.execute(load_sql("fleet/anchors"), params)
            names = ("v_first_hour", "v_last_hour", "m_first_hour", "m_last_hour")
            rows = conn.execute(statement, {**params, **dict(zip(names, anchors.fetchone(), strict=True))})
            return as_of.fetchone()[0], rows.fetchall()

    # The replica when there is a current one (web/db.py): its rollups and marks are one consistent state.
    as_of_ts, rows = db.run_read(read)
    return rows, format_ts(as_of_ts)


def query_rows(row: tuple) -> tuple[tuple, tuple]:
    """Split a fleet row into the (meter row, vehicle row) that web/analytics.py summarises."""
    (_vehicle_id, meter_id, ac, m_resets, m_glitches, m_implausible, m_readings, m_baseline,
     dc, v_resets, v_glitches, v_implausible, v_readings, v_baseline, avg_temp) = row[:15]
    return ((meter_id, ac, m_resets, m_glitches, m_implausible, m_readings, m_baseline),
            (dc, v_resets, v_glitches, v_implausible, v_readings, v_baseline, avg_temp))


@bp.get("/v1/analytics/fleet")
def fleet_summary():
    """Return the fleet's AC and DC energy, efficiency, its percentiles and counter events over the window."""
    settings = current_app.config["SETTINGS"]
    hours, from_ts, to_ts = window(parse_query(_fleet_schema), settings)
    rows, as_of = fleet_query("summary", {"from_ts": from_ts, "to_ts": to_ts})
    (vehicles, meters, ac, dc, readings, temp_sum, m_resets, m_glitches, m_implausible, v_resets, v_glitches,
     v_implausible, percentiles, with_ratio, warnings, with_warnings) = rows[0]
    ac_exact, dc_exact = energy_kwh(ac), energy_kwh(dc)
    return jsonify({
        "vehicles": vehicles,
        "meters": meters,
        "windowHours": hours,
        "acKwh": float(ac_exact),
        "dcKwh": float(dc_exact),
        "efficiencyRatio": efficiency(dc_exact, ac_exact),
        "efficiencyPercentiles": {name: _round(value, 4) for name, value in
                                  zip(("p10", "p50", "p90"), percentiles or (None, None, None), strict=True)},
        "vehiclesWithEfficiency": with_ratio,
        "avgBatteryTemp": _round(temp_sum / readings, 3) if readings else None,
        "counterResets": {"meter": int(m_resets), "vehicle": int(v_resets)},
        "glitches": {"meter": int(m_glitches), "vehicle": int(v_glitches)},
        "implausibleSteps": {"meter": int(m_implausible), "vehicle": int(v_implausible)},
        "warnings": int(warnings),
        "vehiclesWithWarnings": with_warnings,
        "fromTs": format_ts(from_ts),
        "toTs": format_ts(to_ts),
        "asOf": as_of,
    })


def _sign(payload: bytes, key: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()[:16]).decode().rstrip("=")


def encode_cursor(state: dict, key: bytes) -> str:
    """Return an opaque, signed cursor for ``state``."""
    payload = orjson.dumps(state)
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _sign(payload, key)


def decode_cursor(cursor: str, key: bytes) -> dict:
    """Return the state of a cursor this server made, else raise a 400."""
    try:
        body, signature = cursor.split(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if not hmac.compare_digest(signature, _sign(payload, key)):
            raise ValueError("bad signature")
        state = orjson.loads(payload)
        if not isinstance(state, dict):
            raise ValueError("not an object")
        return state
    except (ValueError, orjson.JSONDecodeError):
        raise ApiError(400, "invalid_parameter", "cursor: Not a cursor of this query.", parameter="cursor") from None


@bp.get("/v1/analytics/vehicles")
def vehicle_ranking():
    """Return every mapped vehicle's performance over the window, sorted and paginated."""
    settings = current_app.config["SETTINGS"]
    query = parse_query(_ranking_schema)
    key = settings.cursor_key()
    after = (None, None, None)
    if query["cursor"]:
        state = decode_cursor(query["cursor"], key)
        if (state.get("sort"), state.get("order"), state.get("hours")) != (query["sort"], query["order"],
                                                                           query["hours"]):
            raise ApiError(400, "invalid_parameter", "cursor: Not a cursor of this query (sort, order and hours "
                           "must stay the same).", parameter="cursor")
        try:
            query["to"] = datetime.fromisoformat(state["to"])
            missing, value, vehicle_id = state["after"]
            after = (int(missing), float(value), str(vehicle_id))
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "invalid_parameter", "cursor: Not a cursor of this query.",
                           parameter="cursor") from None
    hours, from_ts, to_ts = window(query, settings)
    rows, as_of = fleet_query("ranking", {
        "from_ts": from_ts, "to_ts": to_ts, "sort": query["sort"], "descending": query["order"] == "desc",
        "limit": query["limit"] + 1, "after_missing": after[0], "after_value": after[1], "after_id": after[2]})
    page = rows[:query["limit"]]
    next_cursor = None
    if len(rows) > query["limit"]:
        last = page[-1]
        # sql/fleet/ranking.sql's rows: query_rows()'s 15 columns, then the key's missing flag and signed value.
        next_cursor = encode_cursor({"sort": query["sort"], "order": query["order"], "hours": hours,
                                     "to": format_ts(to_ts), "after": [*last[15:17], last[0]]}, key)
    answers = [summarize(row[0], hours, from_ts, to_ts, *query_rows(row)) for row in page]
    return jsonify({"vehicles": answers, "next": next_cursor,
                    "fromTs": format_ts(from_ts), "toTs": format_ts(to_ts), "asOf": as_of})


class _PerStream(Schema):
    meter = fields.Integer(required=True)
    vehicle = fields.Integer(required=True)


class _Percentiles(Schema):
    p10 = fields.Float(required=True, allow_none=True)
    p50 = fields.Float(required=True, allow_none=True)
    p90 = fields.Float(required=True, allow_none=True)


class FleetSchema(Schema):
    """The fleet's figures over the whole hours (fromTs, toTs]."""

    vehicles = fields.Integer(required=True, metadata={"description": "Mapped vehicles"})
    meters = fields.Integer(required=True, metadata={"description": "Distinct meters mapped to a vehicle"})
    windowHours = fields.Integer(required=True)
    acKwh = fields.Float(required=True, metadata={"description": "AC energy of the mapped meters, each once"})
    dcKwh = fields.Float(required=True)
    efficiencyRatio = fields.Float(required=True, allow_none=True)
    efficiencyPercentiles = fields.Nested(_Percentiles, required=True)
    vehiclesWithEfficiency = fields.Integer(required=True)
    avgBatteryTemp = fields.Float(required=True, allow_none=True)
    counterResets = fields.Nested(_PerStream, required=True)
    glitches = fields.Nested(_PerStream, required=True)
    implausibleSteps = fields.Nested(_PerStream, required=True)
    warnings = fields.Integer(required=True, metadata={"description": "Warnings of all vehicles' answers"})
    vehiclesWithWarnings = fields.Integer(required=True)
    fromTs = fields.String(required=True, metadata={"format": "date-time"})
    toTs = fields.String(required=True, metadata={"format": "date-time"})
    asOf = fields.String(required=True, metadata={"format": "date-time", "description": "Readings committed before "
                                                  "this are in the figures"})


class RankingSchema(Schema):
    """A page of vehicles' performance, sorted."""

    vehicles = fields.List(fields.Nested("PerformanceSchema"), required=True)
    next = fields.String(required=True, allow_none=True)
    fromTs = fields.String(required=True, metadata={"format": "date-time"})
    toTs = fields.String(required=True, metadata={"format": "date-time"})
    asOf = fields.String(required=True, metadata={"format": "date-time"})

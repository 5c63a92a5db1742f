"""GET /v1/analytics/performance/<vehicleId>: AC vs DC energy, efficiency and battery temperature over a window.

Windows up to the retention period: the whole hours come from the hourly rollups, the edges from raw
history (web/rollup_reads.py), so the answer equals the raw computation (fetch_window) exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import psycopg
from flask import Blueprint, current_app, jsonify
from marshmallow import EXCLUDE, Schema, fields, validate, validates

from common.database import load_sql
from common.settings import Settings
from common.streams import format_ts
from web import db, rollup_reads
from web.errors import ApiError
from web.params import check_device_id, check_in_calendar, parse_query

bp = Blueprint("analytics", __name__)

DEFAULT_HOURS = 24
# The longest window with the default retention (90 days); check_hours() holds requests to the configured one.
MAX_WINDOW_HOURS = 24 * Settings().retention_days


class PerformanceQuerySchema(Schema):
    """The query of GET /v1/analytics/performance/<vehicleId>."""

    class Meta:
        unknown = EXCLUDE

    hours = fields.Integer(
        load_default=DEFAULT_HOURS,
        validate=validate.Range(min=1, max=MAX_WINDOW_HOURS),
        metadata={"description": "Window length in hours, 1 .. RETENTION_DAYS x 24 (2160 by default)",
                  "default": DEFAULT_HOURS},
    )
    to = fields.AwareDateTime(
        format="iso",
        load_default=None,
        metadata={"description": "End of the window (inclusive), ISO-8601 with an offset; default now. "
                                 "Encode '+' as %2B. The window is (to - hours, to]."},
    )

    @validates("to")
    def _to_in_calendar(self, value: datetime | None, data_key: str, **kwargs) -> None:
        check_in_calendar(value)


class StreamCountsSchema(Schema):
    """One count per stream."""

    meter = fields.Integer(required=True)
    vehicle = fields.Integer(required=True)


class StreamTimestampsSchema(Schema):
    """One timestamp per stream, null when there is none."""

    meter = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    vehicle = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})


class PerformanceSchema(Schema):
    """A vehicle's charging performance over the window (fromTs, toTs]."""

    vehicleId = fields.String(required=True)
    meterId = fields.String(required=True, metadata={"description": "The meter mapped to the vehicle now"})
    windowHours = fields.Integer(required=True)
    acKwh = fields.Float(required=True, metadata={"description": "AC energy drawn by the meter, kWh, 3 decimals"})
    dcKwh = fields.Float(required=True, metadata={"description": "DC energy into the battery, kWh, 3 decimals"})
    efficiencyRatio = fields.Float(
        required=True, allow_none=True,
        metadata={"description": "dcKwh / acKwh, 4 decimals, not clamped; null when acKwh is 0"},
    )
    avgBatteryTemp = fields.Float(
        required=True, allow_none=True,
        metadata={"description": "Mean battery temperature of the readings in the window, 3 decimals"},
    )
    fromTs = fields.String(required=True, metadata={"format": "date-time", "description": "Window start, exclusive"})
    toTs = fields.String(required=True, metadata={"format": "date-time", "description": "Window end, inclusive"})
    readings = fields.Nested(StreamCountsSchema, required=True,
                             metadata={"description": "Readings inside the window, per stream"})
    counterResets = fields.Nested(
        StreamCountsSchema, required=True,
        metadata={"description": "Counter drops that stayed (a replaced counter), per stream"},
    )
    glitches = fields.Nested(StreamCountsSchema, required=True,
                             metadata={"description": "Drops the next reading undid, ignored, per stream"})
    implausibleSteps = fields.Nested(
        StreamCountsSchema, required=True,
        metadata={"description": "Increases above MAX_<KIND>_POWER_KW, ignored, per stream"},
    )
    baselineTs = fields.Nested(
        StreamTimestampsSchema, required=True,
        metadata={"description": "The reading before the window each count starts from (the neighbour within 7 days)"},
    )
    warnings = fields.List(fields.String(), required=True)


_query_schema = PerformanceQuerySchema()


def window_params(vehicle_id: str, meter_id: str, from_ts: datetime, to_ts: datetime, settings: Settings) -> dict:
    """Return the parameters of the sql/analytics queries for the window (from_ts, to_ts]."""
    return {"vehicle_id": vehicle_id, "meter_id": meter_id, "from_ts": from_ts, "to_ts": to_ts,
            "max_meter_power_kw": settings.max_meter_power_kw, "max_vehicle_power_kw": settings.max_vehicle_power_kw}


def check_hours(hours: int, settings: Settings) -> None:
    """Raise a 400 naming ``hours`` when the window reaches beyond the retention period."""
    most = settings.retention_days * 24
    if hours > most:
        raise ApiError(400, "invalid_parameter",
                       f"hours: Must be less than or equal to {most} (the retention period).", parameter="hours")


def fetch_window(conn: psycopg.Connection, params: dict) -> tuple[tuple, tuple]:
    """Compute the window from raw history alone, both streams in one pipeline; return their rows.

    The reference the rollup reads are held to (tests); the endpoint reads web/rollup_reads.py.
    """
    with conn.pipeline():
        meter = conn.execute(load_sql("analytics/meter_energy"), params)
        vehicle = conn.execute(load_sql("analytics/vehicle_energy"), params)
    return meter.fetchone(), vehicle.fetchone()


def _round(value: float | Decimal | None, places: int) -> float | None:
    """Round half up (away from zero) to ``places`` decimals: a Decimal (an exact numeric sum) as it is, a float
    through its shortest decimal repr, so that 2.675 rounds to 2.68 as a person expects."""
    if value is None:
        return None
    if not isinstance(value, Decimal):
        value = float(value)
        text = repr(value)
        dot = text.find(".")
        # Fast path: when the shortest repr has more than places + 1 decimals, no rounding boundary lies
        # between it and the float's exact value (that boundary would be a shorter repr), so rounding the
        # exact value (format) gives what rounding the repr does.
        if dot >= 0 and "e" not in text and len(text) - dot - 1 > places + 1:
            return float(f"{value:.{places}f}")
    return float(_half_up(value, places))


_STEPS = {places: Decimal(1).scaleb(-places) for places in range(7)}


def _half_up(value: Decimal | float, places: int) -> Decimal:
    exact = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    return exact.quantize(_STEPS[places], ROUND_HALF_UP)


def energy_kwh(value: Decimal | float) -> Decimal:
    """Return an energy as the API states it: kWh, 3 decimals, half up on the exact sum (a float: on its repr)."""
    return _half_up(value, 3)


def efficiency(dc_kwh: Decimal, ac_kwh: Decimal) -> float | None:
    """Return dcKwh / acKwh of the stated (rounded) figures, 4 decimals half up; None when acKwh is 0.

    Exact decimal division, as sql/fleet/vehicles.sql computes it: the quotient of two 3-decimal
    figures is never within 1e-16 of a rounding tie (for acKwh below 1e9), so both agree.
    """
    if not ac_kwh:
        return None
    return float((dc_kwh / ac_kwh).quantize(_STEPS[4], ROUND_HALF_UP))


def counter_warnings(stream: str, figure: str, resets: int, glitches: int, implausible: int) -> list[str]:
    """Say in a sentence each way the counter rules changed ``figure`` from the raw increases."""
    warnings = []
    if glitches:
        warnings.append(f"{figure} ignores {glitches} {stream} reading(s) below their predecessor that the next "
                        "reading climbed back above (glitches); counting went on from the predecessor.")
    if resets:
        warnings.append(f"{figure} counts nothing for {resets} {stream} counter reset(s) (a drop that stayed); "
                        "counting went on from the new value. A later reading may turn a last drop into a glitch.")
    if implausible:
        warnings.append(f"{figure} ignores {implausible} {stream} increase(s) implying more than the "
                        f"{stream} power ceiling (MAX_{stream.upper()}_POWER_KW).")
    return warnings


def figures(meter_row: tuple, vehicle_row: tuple) -> tuple[float, float, float | None, list[str]]:
    """Return (acKwh, dcKwh, efficiencyRatio, warnings) of the two query rows, as the answer states them."""
    _meter_id, ac_energy, meter_resets, meter_glitches, meter_implausible, *_ = meter_row
    dc_energy, vehicle_resets, vehicle_glitches, vehicle_implausible, *_ = vehicle_row
    ac_exact, dc_exact = energy_kwh(ac_energy), energy_kwh(dc_energy)
    ac_kwh, dc_kwh = float(ac_exact), float(dc_exact)
    # The ratio of the reported (rounded) figures, so that a reader recomputing it gets the same.
    ratio = efficiency(dc_exact, ac_exact)
    warnings = []
    if ratio is not None and ratio > 1:
        warnings.append(
            "efficiencyRatio is above 1: the battery took more energy than the meter drew from the grid; "
            "check the mapping and both counters."
        )
    if not ac_kwh and dc_kwh:
        warnings.append("dcKwh is above 0 while the meter drew no energy: check the mapping and the meter.")
    if meter_resets or meter_glitches or meter_implausible:
        warnings += counter_warnings("meter", "acKwh", meter_resets, meter_glitches, meter_implausible)
    if vehicle_resets or vehicle_glitches or vehicle_implausible:
        warnings += counter_warnings("vehicle", "dcKwh", vehicle_resets, vehicle_glitches, vehicle_implausible)
    return ac_kwh, dc_kwh, ratio, warnings


def summarize(vehicle_id: str, hours: int, from_ts: datetime, to_ts: datetime, meter_row: tuple,
              vehicle_row: tuple) -> dict:
    """Turn the two query rows into the API answer."""
    meter_id, _ac, meter_resets, meter_glitches, meter_implausible, meter_readings, meter_baseline = meter_row
    _dc, vehicle_resets, vehicle_glitches, vehicle_implausible, vehicle_readings, vehicle_baseline, avg_temp = (
        vehicle_row
    )
    ac_kwh, dc_kwh, ratio, warnings = figures(meter_row, vehicle_row)
    return {
        "vehicleId": vehicle_id,
        "meterId": meter_id,
        "windowHours": hours,
        "acKwh": ac_kwh,
        "dcKwh": dc_kwh,
        "efficiencyRatio": ratio,
        "avgBatteryTemp": _round(avg_temp, 3),
        "fromTs": format_ts(from_ts),
        "toTs": format_ts(to_ts),
        "readings": {"meter": meter_readings, "vehicle": vehicle_readings},
        "counterResets": {"meter": meter_resets, "vehicle": vehicle_resets},
        "glitches": {"meter": meter_glitches, "vehicle": vehicle_glitches},
        "implausibleSteps": {"meter": meter_implausible, "vehicle": vehicle_implausible},
        "baselineTs": {
            "meter": format_ts(meter_baseline) if meter_baseline else None,
            "vehicle": format_ts(vehicle_baseline) if vehicle_baseline else None,
        },
        "warnings": warnings,
    }


@bp.get("/v1/analytics/performance/<vehicle_id>")
def performance(vehicle_id: str):
    """Return the vehicle's AC/DC energy, efficiency and mean battery temperature over the window."""
    check_device_id("vehicleId", vehicle_id)
    query = parse_query(_query_schema)
    settings = current_app.config["SETTINGS"]
    hours = query["hours"]
    check_hours(hours, settings)
    to_ts = (query["to"] or datetime.now(UTC)).astimezone(UTC)
    from_ts = to_ts - timedelta(hours=hours)
    # The mapping from the primary (a mapping created a moment ago counts), the readings from read_pool().
    with db.connection() as conn:
        mapping = conn.execute(load_sql("mappings/by_vehicle"), {"vehicle_id": vehicle_id}).fetchone()
    if mapping is None:
        raise ApiError(404, "not_found", f"Vehicle {vehicle_id!r} has no mapping to a meter.")
    meter_row, vehicle_row = db.run_read(
        lambda conn: rollup_reads.fetch_performance(conn, vehicle_id, mapping[1], from_ts, to_ts, settings))
    return jsonify(summarize(vehicle_id, hours, from_ts, to_ts, meter_row, vehicle_row))

"""GET /v1/vehicles/<id>/readings and /v1/meters/<id>/readings: raw pages, buckets and CSV of a device's history."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from common.database import load_sql
from common.streams import format_ts
from web import db
from web.errors import ApiError
from web.params import EARLIEST, LATEST, check_device_id, check_in_calendar, parse_query

bp = Blueprint("history", __name__)

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
MAX_BUCKETS = 10_000
DEFAULT_BUCKET_WINDOW = timedelta(hours=24)
INTERVALS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
             "1h": timedelta(hours=1), "1d": timedelta(days=1)}
CSV_CHUNK_BYTES = 64 * 1024  # what a CSV download holds in memory at most, about


def _vehicle_readings(device_id: str, rows: list[tuple]) -> list[dict]:
    return [{"vehicleId": device_id, "timestamp": ts, "soc": soc, "kwhDeliveredDc": kwh, "batteryTemp": temp}
            for ts, soc, kwh, temp in rows]


def _meter_readings(device_id: str, rows: list[tuple]) -> list[dict]:
    return [{"meterId": device_id, "timestamp": ts, "kwhConsumedAc": kwh, "voltage": voltage}
            for ts, kwh, voltage in rows]


@dataclass(frozen=True)
class Kind:
    """What differs between the two history endpoints."""

    name: str  # meter | vehicle
    id_field: str
    columns: tuple[str, ...]  # the API's names of the page query's value columns, in order
    power_setting: str
    # Page rows (ts, values...) -> readings with the API's field names. A dict literal per row is a
    # quarter of the CPU of dict(zip(names, row)) (1.4 -> 0.35 ms per 1,000 readings). The
    # timestamps stay datetimes: orjson writes them as format_ts() would, since the web pool's
    # sessions are in UTC (web/db.py), at a fifth of the cost per reading.
    readings: Callable[[str, list[tuple]], list[dict]]


VEHICLE = Kind("vehicle", "vehicleId", ("soc", "kwhDeliveredDc", "batteryTemp"), "max_vehicle_power_kw",
               _vehicle_readings)
METER = Kind("meter", "meterId", ("kwhConsumedAc", "voltage"), "max_meter_power_kw", _meter_readings)


class WindowPageQuerySchema(Schema):
    """A window (from, to] and the keyset page inside it: shared by the history and the conflicts listings."""

    class Meta:
        unknown = EXCLUDE

    from_ = fields.AwareDateTime(
        data_key="from", format="iso", load_default=None,
        metadata={"description": "Window start, exclusive, ISO-8601 with an offset (encode '+' as %2B). The window "
                                 "is (from, to], like the analytics'. Default: the beginning (raw), to - 24 h "
                                 "(buckets)."},
    )
    to = fields.AwareDateTime(
        format="iso", load_default=None,
        metadata={"description": "Window end, inclusive. Default: everything (raw), now (buckets)."},
    )
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Items per page, 1..{MAX_LIMIT}", "default": DEFAULT_LIMIT},
    )
    cursor = fields.String(load_default=None, metadata={"description": "The `next` of the previous page"})

    @validates("from_")
    def _from_in_calendar(self, value, data_key: str, **kwargs) -> None:
        check_in_calendar(value)

    @validates("to")
    def _to_in_calendar(self, value, data_key: str, **kwargs) -> None:
        check_in_calendar(value)


class HistoryQuerySchema(WindowPageQuerySchema):
    """The query of GET /v1/{vehicles,meters}/<id>/readings."""

    interval = fields.String(
        load_default=None, validate=validate.OneOf(list(INTERVALS)),
        metadata={"description": "Answer buckets of this width instead of raw readings"},
    )
    tz = fields.String(load_default="UTC", metadata={"description": "IANA zone of the buckets (1d = calendar days)",
                                                     "default": "UTC"})
    format = fields.String(load_default=None, validate=validate.OneOf(["json", "csv"]),
                           metadata={"description": "csv: the same as Accept: text/csv"})

    @validates("tz")
    def _known_zone(self, value: str, data_key: str, **kwargs) -> None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValidationError("Must be an IANA time zone such as UTC or Europe/Berlin.") from None


class VehicleHistoryReadingSchema(Schema):
    """One stored vehicle reading."""

    vehicleId = fields.String(required=True)
    timestamp = fields.String(required=True, metadata={"format": "date-time"})
    soc = fields.Float(required=True)
    kwhDeliveredDc = fields.Float(required=True)
    batteryTemp = fields.Float(required=True)


class MeterHistoryReadingSchema(Schema):
    """One stored meter reading."""

    meterId = fields.String(required=True)
    timestamp = fields.String(required=True, metadata={"format": "date-time"})
    kwhConsumedAc = fields.Float(required=True)
    voltage = fields.Float(required=True)


class BucketSchema(Schema):
    """One bucket (start, end]: its readings' count, energy with its counter flags, and statistics."""

    start = fields.String(required=True, metadata={"format": "date-time", "description": "Exclusive"})
    end = fields.String(required=True, metadata={"format": "date-time", "description": "Inclusive"})
    count = fields.Integer(required=True)
    counterResets = fields.Integer(required=True)
    glitches = fields.Integer(required=True)
    implausibleSteps = fields.Integer(required=True)


class VehicleBucketSchema(BucketSchema):
    """A vehicle bucket; statistics are null when it holds no reading."""

    dcKwh = fields.Float(required=True, metadata={"description": "DC energy delivered, kWh (counter rules)"})
    socMin = fields.Float(required=True, allow_none=True)
    socMax = fields.Float(required=True, allow_none=True)
    socLast = fields.Float(required=True, allow_none=True)
    batteryTempAvg = fields.Float(required=True, allow_none=True)
    batteryTempMax = fields.Float(required=True, allow_none=True)


class MeterBucketSchema(BucketSchema):
    """A meter bucket; statistics are null when it holds no reading."""

    acKwh = fields.Float(required=True, metadata={"description": "AC energy consumed, kWh (counter rules)"})
    voltageAvg = fields.Float(required=True, allow_none=True)
    voltageMin = fields.Float(required=True, allow_none=True)
    voltageMax = fields.Float(required=True, allow_none=True)


class VehicleHistorySchema(Schema):
    """A page of raw readings (`readings`, `next`) or, with `interval`, buckets (`interval`, `tz`, `buckets`)."""

    vehicleId = fields.String(required=True)
    readings = fields.List(fields.Nested(VehicleHistoryReadingSchema))
    next = fields.String(allow_none=True, metadata={"description": "Cursor of the next page; null at the end"})
    interval = fields.String()
    tz = fields.String()
    buckets = fields.List(fields.Nested(VehicleBucketSchema))


class MeterHistorySchema(Schema):
    """A page of raw readings (`readings`, `next`) or, with `interval`, buckets (`interval`, `tz`, `buckets`)."""

    meterId = fields.String(required=True)
    readings = fields.List(fields.Nested(MeterHistoryReadingSchema))
    next = fields.String(allow_none=True, metadata={"description": "Cursor of the next page; null at the end"})
    interval = fields.String()
    tz = fields.String()
    buckets = fields.List(fields.Nested(MeterBucketSchema))


_query_schema = HistoryQuerySchema()


# -- cursors: opaque, bound to what they page, and signed so that a tampered one is a 400 -----------------------


def _cursor_key() -> bytes:
    return current_app.config["SETTINGS"].cursor_key()


def encode_cursor(scope: str, position: list) -> str:
    """Return an opaque cursor for ``position`` (JSON values) inside ``scope`` (what is paged)."""
    payload = base64.urlsafe_b64encode(orjson.dumps([scope, position])).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(_cursor_key(), payload, hashlib.sha256).digest()[:12])
    return (payload + b"." + mac).decode()


def decode_cursor(scope: str, cursor: str) -> list:
    """Return the position of ``cursor``; a cursor not made here for ``scope`` is a 400."""
    bad = ApiError(400, "invalid_parameter", "cursor: Not a cursor of this listing; pass `next` unchanged.",
                   parameter="cursor")
    try:
        payload, mac = cursor.encode("ascii").split(b".")
        expected = base64.urlsafe_b64encode(hmac.new(_cursor_key(), payload, hashlib.sha256).digest()[:12])
        if not hmac.compare_digest(mac, expected):
            raise bad
        found_scope, position = orjson.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    except (ValueError, UnicodeEncodeError, orjson.JSONDecodeError):
        raise bad from None
    if found_scope != scope:
        raise bad
    return position


# -- buckets -------------------------------------------------------------------------------------------------------


def bucket_bounds(interval: str, zone: ZoneInfo, from_ts: datetime, to_ts: datetime) -> list[datetime]:
    """Return the boundaries of the buckets covering (from_ts, to_ts]; 400 above MAX_BUCKETS buckets.

    Sub-day buckets are multiples of the interval since the Unix epoch; 1d buckets are calendar
    days in ``zone`` (23 or 25 hours across a daylight-saving change).
    """
    too_many = ApiError(400, "invalid_parameter", f"interval: More than {MAX_BUCKETS} buckets; narrow from/to.",
                        parameter="interval")
    if interval == "1d":
        first = from_ts.astimezone(zone).date()
        last = to_ts.astimezone(zone).date()
        if (last - first).days > MAX_BUCKETS + 1:
            raise too_many
        days = [first + timedelta(days=n) for n in range((last - first).days + 2)]
        bounds = [datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC) for d in days]
    else:
        step = INTERVALS[interval]
        start = EARLIEST + (from_ts - EARLIEST) // step * step
        n = -(-(to_ts - start) // step)
        if n > MAX_BUCKETS:
            raise too_many
        bounds = [start + k * step for k in range(n + 1)]
    # Keep the first boundary at or before from_ts and the first at or after to_ts.
    while len(bounds) > 1 and bounds[1] <= from_ts:
        bounds.pop(0)
    while len(bounds) > 2 and bounds[-2] >= to_ts:
        bounds.pop()
    if len(bounds) - 1 > MAX_BUCKETS:
        raise too_many
    return bounds


def _round(value: float | None, places: int = 6) -> float | None:
    return None if value is None else round(float(value), places)


def _bucket_body(kind: Kind, start: datetime, end: datetime, zone: ZoneInfo, row: tuple | None) -> dict:
    body = {"start": start.astimezone(zone).isoformat(), "end": end.astimezone(zone).isoformat()}
    _, readings, energy, resets, glitches, implausible, *stats = row or (None, 0, 0.0, 0, 0, 0)
    body.update(count=readings, counterResets=resets, glitches=glitches, implausibleSteps=implausible)
    if kind is VEHICLE:
        names = ("socMin", "socMax", "socLast", "batteryTempAvg", "batteryTempMax")
        body["dcKwh"] = _round(energy)
    else:
        names = ("voltageAvg", "voltageMin", "voltageMax")
        body["acKwh"] = _round(energy)
    body.update({name: _round(value) for name, value in zip(names, stats or [None] * len(names), strict=True)})
    return body


def buckets(kind: Kind, device_id: str, query: dict) -> tuple[dict, list[dict]]:
    """Return the buckets answer's head and its buckets (empty ones included)."""
    zone = ZoneInfo(query["tz"])
    to_ts = (query["to"] or datetime.now(UTC)).astimezone(UTC)
    from_ts = (query["from_"] or to_ts - DEFAULT_BUCKET_WINDOW).astimezone(UTC)
    if from_ts >= to_ts:
        raise ApiError(400, "invalid_parameter", "from: Must be before to.", parameter="from")
    bounds = bucket_bounds(query["interval"], zone, from_ts, to_ts)
    settings = current_app.config["SETTINGS"]
    params = {"device_id": device_id, "from_ts": bounds[0], "to_ts": bounds[-1],
              "stride": INTERVALS[query["interval"]], "daily": query["interval"] == "1d", "tz": query["tz"],
              "max_power_kw": getattr(settings, kind.power_setting)}
    rows = db.run_read(lambda conn: {
        row[0]: row for row in conn.execute(load_sql(f"history/{kind.name}_buckets"), params).fetchall()})
    body = [_bucket_body(kind, start, end, zone, rows.get(start)) for start, end in itertools.pairwise(bounds)]
    return {kind.id_field: device_id, "interval": query["interval"], "tz": query["tz"]}, body


# -- raw pages and CSV ---------------------------------------------------------------------------------------------


def raw_page(kind: Kind, device_id: str, query: dict) -> dict:
    """Return one page of raw readings and the cursor of the next."""
    scope = f"{kind.name}:{device_id}"
    after = (query["from_"] or EARLIEST).astimezone(UTC)
    if query["cursor"]:
        position = decode_cursor(scope, query["cursor"])
        try:
            after = max(after, datetime.fromisoformat(position[0]))
        except (TypeError, ValueError, IndexError):
            raise ApiError(400, "invalid_parameter", "cursor: Not a cursor of this listing.",
                           parameter="cursor") from None
    to_ts = (query["to"] or LATEST).astimezone(UTC)
    params = {"device_id": device_id, "after_ts": after, "to_ts": to_ts, "limit": query["limit"] + 1}
    # Binary results: floats and timestamps load without parsing text (a third less CPU per row), same values.
    rows = db.run_read(lambda conn: conn.execute(load_sql(f"history/{kind.name}_page"), params,
                                                 binary=True).fetchall())
    more = len(rows) > query["limit"]
    rows = rows[: query["limit"]]
    next_cursor = encode_cursor(scope, [rows[-1][0].isoformat()]) if more else None
    return {kind.id_field: device_id, "readings": kind.readings(device_id, rows), "next": next_cursor}


def _csv_lines(header: list[str], rows) -> iter:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for chunk in rows:
        writer.writerows(chunk)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _raw_csv_chunks(kind: Kind, device_id: str, query: dict, header: list[str]):
    """Yield the CSV download in chunks of about CSV_CHUNK_BYTES: the header, then Postgres's COPY output."""
    params = {"device_id": device_id, "after_ts": (query["from_"] or EARLIEST).astimezone(UTC),
              "to_ts": (query["to"] or LATEST).astimezone(UTC)}
    chunk = bytearray(",".join(header).encode() + b"\n")
    # Streamed to the client as it comes: read_connection(), which cannot retry once bytes are sent.
    copy_sql = load_sql(f"history/{kind.name}_csv")
    with db.read_connection() as conn, conn.cursor() as cur, cur.copy(copy_sql, params) as copy:
        for row in copy:  # one CSV line each
            chunk += row
            if len(chunk) >= CSV_CHUNK_BYTES:
                yield bytes(chunk)
                chunk.clear()
    yield bytes(chunk)


def _csv_response(kind: Kind, device_id: str, query: dict, lines) -> Response:
    first = format_ts(query["from_"])[:19] if query["from_"] else "start"
    last = format_ts(query["to"])[:19] if query["to"] else "now"
    what = f"-{query['interval']}" if query["interval"] else ""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", f"{kind.name}-{device_id}{what}-{first}-{last}") + ".csv"
    response = Response(stream_with_context(lines), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _wants_csv(query: dict) -> bool:
    if query["format"]:
        return query["format"] == "csv"
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv" and (
        request.accept_mimetypes["text/csv"] > request.accept_mimetypes["application/json"]
    )


def history(kind: Kind, device_id: str):
    """Answer a history request of either kind: raw page, buckets, JSON or CSV."""
    check_device_id(kind.id_field, device_id)
    query = parse_query(_query_schema)
    csv_wanted = _wants_csv(query)
    if query["interval"]:
        head, bucket_list = buckets(kind, device_id, query)
        if not csv_wanted:
            return jsonify({**head, "buckets": bucket_list})
        header = list(bucket_list[0]) if bucket_list else ["start", "end", "count"]
        return _csv_response(kind, device_id, query,
                             _csv_lines(header, [[[b[k] for k in header] for b in bucket_list]]))
    if not csv_wanted:
        return jsonify(raw_page(kind, device_id, query))
    chunks = _raw_csv_chunks(kind, device_id, query, [kind.id_field, "timestamp", *kind.columns])
    # The first read runs before the 200 goes out: Postgres being down is still a 503 JSON answer.
    first = next(chunks)
    return _csv_response(kind, device_id, query, itertools.chain([first], chunks))


@bp.get("/v1/vehicles/<vehicle_id>/readings")
def vehicle_readings(vehicle_id: str):
    """A vehicle's history: raw readings (keyset pages), buckets, or CSV."""
    return history(VEHICLE, vehicle_id)


@bp.get("/v1/meters/<meter_id>/readings")
def meter_readings(meter_id: str):
    """A meter's history: raw readings (keyset pages), buckets, or CSV."""
    return history(METER, meter_id)

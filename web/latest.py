"""Dashboard reads of each device's latest state: Redis first, Postgres *_latest on a miss (refilling Redis)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import orjson
import psycopg
from flask import Blueprint, Response, current_app, request
from marshmallow import Schema, fields, validate

from common.database import load_sql
from common.streams import ID_FIELD, KIND_NAMES, METER, VEHICLE, Reading
from web import db
from web.auth import requires_scope
from web.errors import ApiError
from web.latest_state import LatestStateStore, render_answer
from web.params import DEVICE_ID_RULE, check_device_id
from web.schemas import DEVICE_ID_PATTERN, DEVICE_ID_REGEX

bp = Blueprint("latest", __name__)

MAX_IDS_PER_READ = 1000
DEFAULT_PAGE, MAX_PAGE = 100, 1000
_ID = DEVICE_ID_PATTERN.strip("^$")
IDS_PATTERN = f"^{_ID}(,{_ID}){{0,{MAX_IDS_PER_READ - 1}}}$"
_BY_ID_SQL = {METER: "latest/meters_by_id", VEHICLE: "latest/vehicles_by_id"}
_ALL_SQL = {METER: "latest/all_meters", VEHICLE: "latest/all_vehicles"}


class MeterLatestSchema(Schema):
    """A meter's newest reading."""

    meterId = fields.String(required=True)
    kwhConsumedAc = fields.Float(required=True)
    voltage = fields.Float(required=True)
    timestamp = fields.String(required=True, metadata={"format": "date-time"})


class VehicleLatestSchema(Schema):
    """A vehicle's newest reading."""

    vehicleId = fields.String(required=True)
    soc = fields.Float(required=True)
    kwhDeliveredDc = fields.Float(required=True)
    batteryTemp = fields.Float(required=True)
    timestamp = fields.String(required=True, metadata={"format": "date-time"})


class MetersLatestSchema(Schema):
    """The newest reading of each known meter asked for, in the order asked; the unknown ones in ``missing``."""

    meters = fields.List(fields.Nested(MeterLatestSchema), required=True)
    missing = fields.List(fields.String(), required=True)


class VehiclesLatestSchema(Schema):
    """The newest reading of each known vehicle asked for, in the order asked; the unknown ones in ``missing``."""

    vehicles = fields.List(fields.Nested(VehicleLatestSchema), required=True)
    missing = fields.List(fields.String(), required=True)


def _ids_field(example: str) -> fields.String:
    return fields.String(
        required=True,
        metadata={
            "description": f"Comma-separated ids, 1 to {MAX_IDS_PER_READ} (repeats count once)",
            "example": example,
            "pattern": IDS_PATTERN,
        },
    )


class VehicleIdsQuerySchema(Schema):
    """The query of the vehicles' multi-read."""

    ids = _ids_field("vehicle-1,vehicle-2,vehicle-404")


class VehiclePageQuerySchema(Schema):
    """The query of the vehicles' listing."""

    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE),
                           metadata={"description": f"Vehicles per page, 1..{MAX_PAGE}", "default": DEFAULT_PAGE})
    after = fields.String(metadata={"description": "The `next` of the previous page (a vehicle id)",
                                    "pattern": DEVICE_ID_PATTERN, "minLength": 1, "maxLength": 64})


class ListedVehicleSchema(VehicleLatestSchema):
    """A vehicle's durable latest reading and the meter mapped to it."""

    meterId = fields.String(required=True, allow_none=True)


class VehiclePageSchema(Schema):
    """One page of the known vehicles in id order; ``next`` is the ``after`` of the following page, or null."""

    vehicles = fields.List(fields.Nested(ListedVehicleSchema), required=True)
    next = fields.String(required=True, allow_none=True)


class MeterIdsQuerySchema(Schema):
    """The query of the meters' multi-read."""

    ids = _ids_field("meter-1,meter-404")


def postgres_latest(conn: psycopg.Connection, kind: str, device_ids: Sequence[str]) -> list[Reading]:
    """Return the durable latest readings of ``device_ids`` that Postgres has."""
    rows = conn.execute(load_sql(_BY_ID_SQL[kind]), {"ids": list(device_ids)}).fetchall()
    return [Reading(kind, row[0], row[1], tuple(row[2:])) for row in rows]


def iter_postgres_latest(conn: psycopg.Connection, kind: str, batch_size: int) -> Iterator[list[Reading]]:
    """Yield every durable latest reading of ``kind`` in batches, through a server-side cursor."""
    with conn.cursor(name=f"all_latest_{KIND_NAMES[kind]}") as cur:
        cur.itersize = batch_size
        cur.execute(load_sql(_ALL_SQL[kind]))
        while rows := cur.fetchmany(batch_size):
            yield [Reading(kind, row[0], row[1], tuple(row[2:])) for row in rows]


def rebuild_latest(conn: psycopg.Connection, store: LatestStateStore, batch_size: int = 5000) -> dict:
    """Refill Redis from Postgres *_latest (never moving a hash backwards); return counts per kind."""
    result = {}
    for kind in (METER, VEHICLE):
        read = moved = 0
        for batch in iter_postgres_latest(conn, kind, batch_size):
            read += len(batch)
            moved += store.refill(batch)
        result[KIND_NAMES[kind] + "s"] = {"read": read, "moved": moved}
    return result


def postgres_fill(kind: str, device_ids: Sequence[str]) -> list[Reading]:
    """Return the durable latest readings Postgres has of ``device_ids`` (Redis missed them); refill Redis."""
    readings = db.run_read(lambda conn: postgres_latest(conn, kind, device_ids))
    if readings:
        current_app.extensions["latest_state"].refill(readings)
    return readings


def _json_response(body: str) -> Response:
    return Response(body, mimetype="application/json")


def _one(kind: str, device_id: str):
    check_device_id(ID_FIELD[kind], device_id)
    # Redis holds each device's answer as JSON already (LatestStateStore), so it is sent as it is.
    answer = current_app.extensions["latest_state"].get(kind, device_id)
    if answer is None:
        readings = postgres_fill(kind, [device_id])
        if not readings:
            raise ApiError(404, "not_found", f"No reading is known for {ID_FIELD[kind]} {device_id!r}.")
        answer = render_answer(readings[0])
    return _json_response(answer)


def _asked_ids() -> list[str]:
    """Return the ids asked for: ``?ids=a,b,c`` on a GET, ``{"ids": [...]}`` in a POST's body."""
    if request.method == "GET":
        raw = request.args.get("ids")
        if raw is None or raw == "":
            raise ApiError(400, "missing_parameter", "Give the ids as ?ids=a,b,c.", parameter="ids")
        return raw.split(",")
    body = request.get_json(silent=True)
    ids = body.get("ids") if isinstance(body, dict) else None
    if (not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS_PER_READ
            or not all(isinstance(d, str) for d in ids)):
        raise ApiError(400, "invalid_body", 'Send a JSON object {"ids": ["a", "b"]} with 1 to '
                       f"{MAX_IDS_PER_READ} ids.", parameter="ids")
    return ids


def _many(kind: str):
    device_ids = list(dict.fromkeys(_asked_ids()))  # unique, in the order asked
    if len(device_ids) > MAX_IDS_PER_READ:
        raise ApiError(400, "invalid_parameter", f"ids: at most {MAX_IDS_PER_READ} ids in one read.",
                       parameter="ids")
    bad = next((d for d in device_ids if not DEVICE_ID_REGEX.fullmatch(d)), None)
    if bad is not None:
        raise ApiError(400, "invalid_parameter", f"ids: {bad!r} is not an id: each must be {DEVICE_ID_RULE}.",
                       parameter="ids")
    store: LatestStateStore = current_app.extensions["latest_state"]
    joined, missing = store.get_many(kind, device_ids)
    if missing and postgres_fill(kind, [device_ids[i] for i in missing]):
        # Postgres knew some that Redis had lost and they are back in Redis: read again, so that
        # the answer keeps the order asked.
        joined, missing = store.get_many(kind, device_ids)
    missing_ids = orjson.dumps([device_ids[i] for i in missing]).decode()
    return _json_response("".join(('{"', KIND_NAMES[kind], 's":[', joined, '],"missing":', missing_ids, "}")))


@bp.get("/v1/vehicles/<vehicle_id>/latest")
def vehicle_latest(vehicle_id: str):
    """Return a vehicle's newest reading."""
    return _one(VEHICLE, vehicle_id)


@bp.get("/v1/meters/<meter_id>/latest")
def meter_latest(meter_id: str):
    """Return a meter's newest reading."""
    return _one(METER, meter_id)


# The GET takes the ids that fit gunicorn's 8190-byte request line; a POST takes up to 1,000 in its body.
@bp.route("/v1/vehicles/latest", methods=["GET", "POST"])
@requires_scope("read")  # the POST form is a read too
def vehicles_latest():
    """Return the newest reading of up to 1,000 vehicles (``?ids=a,b,c`` or a POST of ``{"ids": [...]}``)."""
    return _many(VEHICLE)


@bp.route("/v1/meters/latest", methods=["GET", "POST"])
@requires_scope("read")  # the POST form is a read too
def meters_latest():
    """Return the newest reading of up to 1,000 meters (``?ids=a,b,c`` or a POST of ``{"ids": [...]}``)."""
    return _many(METER)


@bp.get("/v1/vehicles")
def vehicles_page():
    """List the vehicles that have a reading, with their latest one, in id order (``?limit=&after=``)."""
    raw_limit = request.args.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise ApiError(400, "invalid_parameter", f"limit must be an integer from 1 to {MAX_PAGE}.", parameter="limit")
    after = request.args.get("after")
    if after is None:
        after = ""  # before every id
    else:
        check_device_id("after", after)
    limit = int(raw_limit)
    rows = db.run_read(
        lambda conn: conn.execute(load_sql("latest/vehicles_page"), {"after": after, "limit": limit}).fetchall()
    )
    # The durable copy lags Redis by the drain's delay: the listing comes from Postgres, the numbers shown
    # are the durable ones (a dashboard refreshing every few seconds cannot tell).
    vehicles = [{**orjson.loads(render_answer(Reading(VEHICLE, row[0], row[1], tuple(row[2:5])))), "meterId": row[5]}
                for row in rows]
    next_after = rows[-1][0] if len(rows) == limit else None
    return _json_response(orjson.dumps({"vehicles": vehicles, "next": next_after}).decode())

"""Which meter feeds which vehicle: POST/GET/DELETE /v1/mappings."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from common.database import load_sql
from common.streams import format_ts
from web import db
from web.errors import ApiError
from web.params import check_device_id, json_object_body
from web.schemas import DEVICE_ID_PATTERN, device_id_field

bp = Blueprint("mappings", __name__)


class MappingRequestSchema(Schema):
    """Map a vehicle to the meter that feeds it."""

    class Meta:
        unknown = EXCLUDE

    vehicleId = device_id_field()
    meterId = device_id_field()


class MappingSchema(Schema):
    """A vehicle's mapping to its meter."""

    vehicleId = fields.String(required=True)
    meterId = fields.String(required=True)
    createdAt = fields.String(required=True, metadata={"format": "date-time"})
    updatedAt = fields.String(required=True, metadata={"format": "date-time"})


class MeterMappingsSchema(Schema):
    """The vehicles that one meter feeds."""

    meterId = fields.String(required=True)
    mappings = fields.List(fields.Nested(MappingSchema), required=True)


class MeterMappingsQuerySchema(Schema):
    """The query of GET /v1/mappings."""

    meterId = fields.String(
        required=True,
        metadata={"pattern": DEVICE_ID_PATTERN, "minLength": 1, "maxLength": 64, "example": "meter-1"},
    )


_mapping_request = MappingRequestSchema()


def _mapping(row) -> dict:
    vehicle_id, meter_id, created_at, updated_at = row[:4]
    return {"vehicleId": vehicle_id, "meterId": meter_id,
            "createdAt": format_ts(created_at), "updatedAt": format_ts(updated_at)}


@bp.post("/v1/mappings")
def put_mapping():
    """Map a vehicle to a meter: 201 when new, 200 when it replaced (or repeated) the vehicle's mapping."""
    body = json_object_body('{"vehicleId": ..., "meterId": ...}')
    try:
        data = _mapping_request.load(body)
    except ValidationError as exc:
        raise ApiError(400, "invalid_mapping", "The mapping is invalid.", fields=exc.messages) from None
    with db.connection() as conn:
        row = conn.execute(
            load_sql("mappings/upsert"), {"vehicle_id": data["vehicleId"], "meter_id": data["meterId"]}
        ).fetchone()
    response = jsonify(_mapping(row))
    response.status_code = 201 if row[4] else 200
    return response


@bp.get("/v1/mappings/<vehicle_id>")
def get_mapping(vehicle_id: str):
    """Return a vehicle's mapping."""
    check_device_id("vehicleId", vehicle_id)
    with db.connection() as conn:
        row = conn.execute(load_sql("mappings/by_vehicle"), {"vehicle_id": vehicle_id}).fetchone()
    if row is None:
        raise ApiError(404, "not_found", f"Vehicle {vehicle_id!r} has no mapping.")
    return jsonify(_mapping(row))


@bp.get("/v1/mappings")
def list_meter_mappings():
    """List the vehicles fed by the meter given as ``?meterId=``."""
    meter_id = request.args.get("meterId")
    if meter_id is None:
        raise ApiError(400, "missing_parameter", "Give the meter as ?meterId=.", parameter="meterId")
    check_device_id("meterId", meter_id)
    with db.connection() as conn:
        rows = conn.execute(load_sql("mappings/by_meter"), {"meter_id": meter_id}).fetchall()
    return jsonify(meterId=meter_id, mappings=[_mapping(r) for r in rows])


@bp.delete("/v1/mappings/<vehicle_id>")
def delete_mapping(vehicle_id: str):
    """Remove a vehicle's mapping."""
    check_device_id("vehicleId", vehicle_id)
    with db.connection() as conn:
        row = conn.execute(load_sql("mappings/delete"), {"vehicle_id": vehicle_id}).fetchone()
    if row is None:
        raise ApiError(404, "not_found", f"Vehicle {vehicle_id!r} has no mapping.")
    return "", 204

"""POST /v1/telemetry: validate readings and hand them to Redis in one round trip."""

from __future__ import annotations

import orjson
from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError

from common.streams import METER, VEHICLE, Reading
from web import ops
from web.errors import ApiError
from web.schemas import MeterReadingSchema, VehicleReadingSchema

bp = Blueprint("telemetry", __name__)


class ReadingParser:
    """Turn decoded JSON items into ``Reading`` objects, or collect every error with its item index."""

    def __init__(self, max_clock_skew_seconds: int, retention_days: int):
        limits = {"max_clock_skew_seconds": max_clock_skew_seconds, "retention_days": retention_days}
        self.meter_schema = MeterReadingSchema(**limits)
        self.vehicle_schema = VehicleReadingSchema(**limits)

    def parse_item(self, item) -> Reading:
        """Validate one item; raise ``ValidationError`` with per-field messages."""
        if not isinstance(item, dict):
            raise ValidationError({"_item": ["A reading must be a JSON object."]})
        has_meter, has_vehicle = "meterId" in item, "vehicleId" in item
        if has_meter == has_vehicle:
            message = "Give exactly one of meterId (a meter reading) or vehicleId (a vehicle reading)."
            raise ValidationError({"meterId": [message], "vehicleId": [message]})
        if has_meter:
            d = self.meter_schema.load(item)
            return Reading(METER, d["meterId"], d["timestamp"], (d["kwhConsumedAc"], d["voltage"]))
        d = self.vehicle_schema.load(item)
        return Reading(VEHICLE, d["vehicleId"], d["timestamp"], (d["soc"], d["kwhDeliveredDc"], d["batteryTemp"]))

    def parse(self, body) -> list[Reading]:
        """Validate a request body (one object or an array); raise ``ApiError`` naming every bad field."""
        if isinstance(body, dict):
            try:
                return [self.parse_item(body)]
            except ValidationError as exc:
                raise ApiError(400, "invalid_reading", "The reading is invalid; nothing was accepted.",
                               fields=exc.messages) from None
        if not isinstance(body, list):
            raise ApiError(400, "invalid_body", "The body must be a JSON object (one reading) or an array of them.")
        if not body:
            raise ApiError(400, "empty_batch", "The array holds no readings.")
        readings, problems = [], []
        for index, item in enumerate(body):
            try:
                readings.append(self.parse_item(item))
            except ValidationError as exc:
                problems.append({"index": index, "fields": exc.messages})
        if problems:
            raise ApiError(
                400, "invalid_batch",
                f"{len(problems)} of {len(body)} readings are invalid; nothing of the batch was accepted.",
                items=problems,
            )
        return readings


def _is_json_content_type() -> bool:
    mimetype = request.mimetype or ""
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


@bp.post("/v1/telemetry")
def ingest():
    """Accept one reading or an array of readings (meters and vehicles may be mixed)."""
    if not _is_json_content_type():
        raise ApiError(415, "unsupported_media_type", "Send the readings as Content-Type: application/json.")
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON: {exc}.") from None
    limit = current_app.config["MAX_READINGS_PER_REQUEST"]
    if isinstance(body, list) and len(body) > limit:
        raise ApiError(413, "too_many_readings", f"{len(body)} readings in one request; the limit is {limit}.")
    ops.check_backpressure(body)  # 503 + Retry-After while the drain is too far behind
    try:
        readings = current_app.extensions["reading_parser"].parse(body)
    except ApiError:
        ops.count_rejected(body, "invalid")
        raise
    current_app.extensions["latest_state"].append(readings)
    ops.count_accepted(readings)
    meters = sum(1 for r in readings if r.kind == METER)
    response = jsonify(accepted=len(readings), meters=meters, vehicles=len(readings) - meters)
    response.status_code = 202
    return response

"""Dashboard reads of each device's latest state, from Redis."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify

from common.streams import METER, VEHICLE
from web.errors import ApiError
from web.schemas import DEVICE_ID_PATTERN

bp = Blueprint("latest", __name__)
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def _latest(kind: str, id_name: str, device_id: str):
    if not _DEVICE_ID.match(device_id):
        raise ApiError(400, "invalid_parameter", f"{id_name} must be 1 to 64 characters from A-Z, a-z, 0-9 and . _ : -",
                       parameter=id_name)
    reading = current_app.extensions["latest_state"].get(kind, device_id)
    if reading is None:
        raise ApiError(404, "not_found", f"No reading is known for {id_name} {device_id!r}.")
    return jsonify(reading)


@bp.get("/v1/vehicles/<vehicle_id>/latest")
def vehicle_latest(vehicle_id: str):
    """Return a vehicle's newest reading."""
    return _latest(VEHICLE, "vehicleId", vehicle_id)


@bp.get("/v1/meters/<meter_id>/latest")
def meter_latest(meter_id: str):
    """Return a meter's newest reading."""
    return _latest(METER, "meterId", meter_id)

"""POST /v1/telemetry: validate readings and hand them to Redis in one round trip."""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime

import orjson
from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError, validate

from common.streams import API_FIELDS, ID_FIELD, METER, VEHICLE, Reading
from web import ops
from web.auth import current_principal, forbid_other_devices, requires_scope
from web.errors import ApiError
from web.latest_state import NotStoredError
from web.rate_limit import too_many
from web.schemas import MeterReadingSchema, VehicleReadingSchema

bp = Blueprint("telemetry", __name__)
log = logging.getLogger(__name__)

_MISSING = object()
# Integers up to 2**53 convert to float exactly; larger ones are left to marshmallow.
_EXACT_INT = 2**53
_NEVER = re.compile(r"(?!)")
# An item the fast triage knows to be invalid (marshmallow is asked only to say why).
INVALID = object()
# A refused batch's answer names this many bad items at most, and counts all of them.
MAX_REPORTED_ITEMS = 100


def _id_regex(schema, name: str) -> re.Pattern:
    """Return the id field's Regexp from ``schema`` (one that never matches if it has other validators)."""
    validators = schema.fields[name].validators
    if len(validators) == 1 and isinstance(validators[0], validate.Regexp):
        return validators[0].regex
    return _NEVER


def _number_bounds(schema, names: tuple[str, ...]) -> tuple[tuple[str, float, float, bool], ...]:
    """Read each number field's Range from ``schema``: (name, min, max, min inclusive).

    A field whose validators are not exactly one closed-above Range gets impossible bounds, so the
    fast path never accepts it and marshmallow always decides.
    """
    bounds = []
    for name in names:
        validators = schema.fields[name].validators
        rng = validators[0] if len(validators) == 1 and isinstance(validators[0], validate.Range) else None
        if rng is None or rng.min is None or rng.max is None or not rng.max_inclusive:
            bounds.append((name, math.inf, -math.inf, True))
        else:
            bounds.append((name, float(rng.min), float(rng.max), rng.min_inclusive))
    return tuple(bounds)


class ReadingParser:
    """Turn decoded JSON items into ``Reading`` objects, or collect every error with its item index.

    The marshmallow schemas are the rules of record. Checking them costs ~100 us a reading, so a
    fast path first accepts the readings that are plainly valid (bounds and the id pattern are
    read from the schemas themselves); anything it is not sure of goes through marshmallow, which
    accepts it or names the bad fields. tests/test_reading_parser.py checks that both agree.
    """

    def __init__(self, max_clock_skew_seconds: int, retention_days: int):
        limits = {"max_clock_skew_seconds": max_clock_skew_seconds, "retention_days": retention_days}
        self.meter_schema = MeterReadingSchema(**limits)
        self.vehicle_schema = VehicleReadingSchema(**limits)
        self.max_clock_skew = self.meter_schema.max_clock_skew
        self.retention = self.meter_schema.retention
        self._meter_bounds = _number_bounds(self.meter_schema, API_FIELDS[METER])
        self._vehicle_bounds = _number_bounds(self.vehicle_schema, API_FIELDS[VEHICLE])
        self._meter_id = _id_regex(self.meter_schema, ID_FIELD[METER])
        self._vehicle_id = _id_regex(self.vehicle_schema, ID_FIELD[VEHICLE])

    def parse_item(self, item, now: datetime | None = None) -> Reading:
        """Validate one item; raise ``ValidationError`` with per-field messages."""
        verdict = self._triage(item, now or datetime.now(UTC))
        return verdict if type(verdict) is Reading else self._schema_load(item)

    def _schema_load(self, item) -> Reading:
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

    def _triage(self, item, now: datetime):
        """Return the reading if every field is plainly valid, ``INVALID`` if one plainly is not, else None.

        None (unsure) leaves the decision to marshmallow. ``INVALID`` lets a batch that is refused
        anyway count its bad items without marshmallow's ~100 us each.
        """
        if type(item) is not dict:
            return INVALID
        meter_id = item.get("meterId", _MISSING)
        vehicle_id = item.get("vehicleId", _MISSING)
        if vehicle_id is _MISSING:
            kind, device_id, bounds, id_regex = METER, meter_id, self._meter_bounds, self._meter_id
        elif meter_id is _MISSING:
            kind, device_id, bounds, id_regex = VEHICLE, vehicle_id, self._vehicle_bounds, self._vehicle_id
        else:
            return INVALID  # both ids
        if type(device_id) is not str:
            return INVALID  # missing, or not a string
        if not id_regex.match(device_id):
            return INVALID if id_regex is not _NEVER else None
        raw_ts = item.get("timestamp")
        if type(raw_ts) is not str:
            return INVALID
        try:
            # The function marshmallow's AwareDateTime(format="iso") calls.
            ts = datetime.fromisoformat(raw_ts)
        except ValueError:
            return INVALID
        if ts.tzinfo is None or ts.utcoffset() is None or ts > now + self.max_clock_skew or ts < now - self.retention:
            return INVALID
        values = []
        for name, low, high, low_inclusive in bounds:
            value = item.get(name)
            kind_of = type(value)
            if kind_of is int:
                if not -_EXACT_INT <= value <= _EXACT_INT:
                    return INVALID if low <= high and not low <= value <= high else None
                value = float(value)
            elif kind_of is not float:
                return INVALID  # missing, null, a string, a boolean...
            # NaN fails every comparison: invalid too (StrictNumber refuses it).
            if not (value <= high and (value >= low if low_inclusive else value > low)):
                return INVALID if low <= high else None  # impossible bounds: the schema decides
            values.append(value)
        return Reading(kind, device_id, ts, tuple(values))

    def parse(self, body) -> list[Reading]:
        """Validate a request body (one object or an array); raise ``ApiError`` naming the bad fields.

        A refused batch names its first ``MAX_REPORTED_ITEMS`` bad items and counts all of them
        (``invalidCount``); past those, plainly bad items are only counted, so that refusing a
        batch costs no more than accepting one of the same size.
        """
        now = datetime.now(UTC)
        if isinstance(body, dict):
            try:
                return [self.parse_item(body, now)]
            except ValidationError as exc:
                raise ApiError(400, "invalid_reading", "The reading is invalid; nothing was accepted.",
                               fields=exc.messages) from None
        if not isinstance(body, list):
            raise ApiError(400, "invalid_body", "The body must be a JSON object (one reading) or an array of them.")
        if not body:
            raise ApiError(400, "empty_batch", "The array holds no readings.")
        verdicts = [self._triage(item, now) for item in body]
        if None not in verdicts and INVALID not in verdicts:
            return verdicts
        readings, problems, invalid = [], [], 0
        for index, (item, verdict) in enumerate(zip(body, verdicts, strict=True)):
            if type(verdict) is Reading:
                readings.append(verdict)
                continue
            if verdict is INVALID and len(problems) >= MAX_REPORTED_ITEMS:
                invalid += 1
                continue
            try:
                readings.append(self._schema_load(item))
            except ValidationError as exc:
                invalid += 1
                if len(problems) < MAX_REPORTED_ITEMS:
                    problems.append({"index": index, "fields": exc.messages})
        if invalid:
            shown = "" if invalid <= len(problems) else f" The first {len(problems)} are listed."
            raise ApiError(
                400, "invalid_batch",
                f"{invalid} of {len(body)} readings are invalid; nothing of the batch was accepted.{shown}",
                invalidCount=invalid, items=problems,
            )
        return readings


def _not_stored(exc: NotStoredError) -> ApiError:
    """Return the 503 of a request Redis did not (or not verifiably) take."""
    log.warning("ingest not stored", extra={"reason": exc.reason, "error": str(exc)})
    if exc.maybe_partly:
        message = ("The readings were not all stored durably; some of them may have been taken. Resend the whole "
                   "request: it is harmless (history keeps each reading once, latest state only moves forward).")
    else:
        message = "The readings were not stored; resend them shortly."
    error = ApiError(503, exc.reason, message, partlyStored=exc.maybe_partly, retryAfter=1)
    error.headers["Retry-After"] = "1"
    return error


def _is_json_content_type() -> bool:
    mimetype = request.mimetype or ""
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


@bp.post("/v1/telemetry")
@requires_scope("ingest")
def ingest():
    """Accept one reading or an array of readings (meters and vehicles may be mixed)."""
    if not _is_json_content_type():
        raise ApiError(415, "unsupported_media_type", "Send the readings as Content-Type: application/json.")
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if request.content_length is None and len(raw) >= current_app.config["MAX_CONTENT_LENGTH"]:
        # A chunked body is cut at the limit without an error: one more byte raises the 413.
        request.stream.read(1)
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
    principal = current_principal()
    refusal = forbid_other_devices(principal, readings)  # a device key sends only its own device's readings
    if refusal is not None:
        ops.count_rejected(body, "forbidden")
        return refusal
    rate_limits = current_app.extensions.get("rate_limits")  # absent only in the benchmark's unguarded app
    counter = rate_limits.ingest_counter(principal) if rate_limits is not None else None
    try:
        stored = current_app.extensions["latest_state"].append(readings, counter)
    except NotStoredError as exc:
        ops.count_rejected(body, "not_stored")
        raise _not_stored(exc) from None
    if stored < 0:
        ops.count_rejected(body, "rate_limited")
        return too_many(-stored)
    meters = sum(1 for r in readings if r.kind == METER)
    vehicles = len(readings) - meters
    ops.count_accepted(meters, vehicles)
    response = jsonify(accepted=len(readings), meters=meters, vehicles=vehicles)
    response.status_code = 202
    return response

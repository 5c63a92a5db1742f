"""Marshmallow schemas for the API: what a valid reading is, field by field."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
# The same rule for Python's re: "$" also matches before a final newline, "\Z" only at the very end
# (an id ending in a newline would split its COPY row in two).
DEVICE_ID_REGEX = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
# A cumulative kWh counter above this is a broken device, not a reading (and keeps sums finite).
MAX_COUNTER_KWH = 1e12
VOLTAGE_RANGE = (0.0, 1000.0)  # exclusive minimum, inclusive maximum
SOC_RANGE = (0.0, 100.0)
BATTERY_TEMP_RANGE = (-50.0, 150.0)


class StrictNumber(fields.Float):
    """A finite JSON number: rejects strings ("50"), booleans, null, NaN and Infinity."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not a number: give a JSON number, not a string or a boolean.",
        "special": "Not a finite number: NaN and Infinity are not allowed.",
    }

    def __init__(self, **kwargs):
        super().__init__(allow_nan=False, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        try:
            number = float(value)
        except OverflowError:
            raise self.make_error("special") from None
        if not math.isfinite(number):
            raise self.make_error("special")
        return number


def device_id_field(**kwargs) -> fields.String:
    """Return the field for a meter or vehicle id."""
    return fields.String(
        required=True,
        validate=validate.Regexp(DEVICE_ID_REGEX, error="Must be 1 to 64 characters from A-Z, a-z, 0-9 and . _ : -"),
        metadata={"pattern": DEVICE_ID_PATTERN, "maxLength": 64, "minLength": 1},
        **kwargs,
    )


class ReadingSchema(Schema):
    """Fields common to every reading; the time window is checked against the schema's limits."""

    class Meta:
        unknown = EXCLUDE

    timestamp = fields.AwareDateTime(
        required=True,
        format="iso",
        metadata={"description": "ISO-8601 with an offset, e.g. 2026-11-26T10:00:00Z"},
    )

    def __init__(self, *, max_clock_skew_seconds: int = 300, retention_days: int = 90, **kwargs):
        super().__init__(**kwargs)
        self.max_clock_skew = timedelta(seconds=max_clock_skew_seconds)
        self.retention = timedelta(days=retention_days)

    @validates("timestamp")
    def _timestamp_in_window(self, value: datetime, data_key: str, **kwargs) -> None:
        now = datetime.now(UTC)
        if value > now + self.max_clock_skew:
            raise ValidationError(
                f"Too far in the future: at most {int(self.max_clock_skew.total_seconds())} s after the server's clock."
            )
        if value < now - self.retention:
            raise ValidationError(f"Too old: older than the retention period of {self.retention.days} days.")


class MeterReadingSchema(ReadingSchema):
    """A grid meter's reading."""

    meterId = device_id_field()
    kwhConsumedAc = StrictNumber(
        required=True,
        validate=validate.Range(min=0, max=MAX_COUNTER_KWH),
        metadata={"description": "Cumulative AC energy drawn from the grid, kWh"},
    )
    voltage = StrictNumber(
        required=True,
        validate=validate.Range(min=VOLTAGE_RANGE[0], max=VOLTAGE_RANGE[1], min_inclusive=False),
        metadata={"description": "Volts, > 0 and <= 1000"},
    )


class VehicleReadingSchema(ReadingSchema):
    """A vehicle's reading."""

    vehicleId = device_id_field()
    soc = StrictNumber(
        required=True,
        validate=validate.Range(min=SOC_RANGE[0], max=SOC_RANGE[1]),
        metadata={"description": "State of charge, percent"},
    )
    kwhDeliveredDc = StrictNumber(
        required=True,
        validate=validate.Range(min=0, max=MAX_COUNTER_KWH),
        metadata={"description": "Cumulative DC energy delivered into the battery, kWh"},
    )
    batteryTemp = StrictNumber(
        required=True,
        validate=validate.Range(min=BATTERY_TEMP_RANGE[0], max=BATTERY_TEMP_RANGE[1]),
        metadata={"description": "Battery temperature, degrees Celsius, -50..150"},
    )


class AcceptedSchema(Schema):
    """The answer to an accepted ingest."""

    accepted = fields.Integer(required=True)
    meters = fields.Integer(required=True)
    vehicles = fields.Integer(required=True)


class ErrorSchema(Schema):
    """Every error answer: a code, a sentence, and where relevant what was wrong with which field."""

    error = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields")
    items = fields.List(fields.Dict())

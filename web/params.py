"""Checks of request parameters shared by the read endpoints: each failure is a 400 naming the parameter."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
from flask import request
from marshmallow import Schema, ValidationError

from web.errors import ApiError
from web.schemas import DEVICE_ID_REGEX

DEVICE_ID_RULE = "1 to 64 characters from A-Z, a-z, 0-9 and . _ : -"
# Timestamps of a query must lie inside the calendar Python and Postgres share, with room around them.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
# A '+' in a query string decodes to a space: "...T10:00:00 02:00" means "...T10:00:00+02:00".
_OFFSET_WITH_SPACE = re.compile(r" (\d\d(?::?\d\d)?)$")
TIMESTAMP_PARAMETERS = ("from", "to")


def check_device_id(name: str, value: str) -> str:
    """Return ``value`` if it is a valid meter/vehicle id, else raise a 400 naming ``name``."""
    # fullmatch with \Z: a trailing newline is not a valid id (``$`` would let it through).
    if not DEVICE_ID_REGEX.fullmatch(value):
        raise ApiError(400, "invalid_parameter", f"{name} must be {DEVICE_ID_RULE}.", parameter=name)
    return value


def json_body():
    """Return the request's decoded JSON body (any JSON value), or raise 415/400 saying what is wrong."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise ApiError(415, "unsupported_media_type", "Send the body as Content-Type: application/json.")
    try:
        return orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON: {exc}.") from None


def json_object_body(what: str) -> dict:
    """Return the request's JSON object body, or raise 415/400 saying what is wrong."""
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", f"The body must be a JSON object: {what}.")
    return body


def parameter_errors(exc_messages: dict) -> tuple[str, str]:
    """Return (first bad parameter, its first message) from a marshmallow error dict."""
    name, messages = next(iter(exc_messages.items()))
    message = messages[0] if isinstance(messages, list) and messages else str(messages)
    return name, message


def check_in_calendar(value: datetime | None) -> None:
    """Raise a marshmallow ValidationError unless ``value`` is None or between EARLIEST and LATEST."""
    try:
        ok = value is None or EARLIEST <= value.astimezone(UTC) < LATEST
    except OverflowError:
        ok = False
    if not ok:
        raise ValidationError("Must be between 1970-01-01 and 9999-01-01.")


def parse_query(schema: Schema) -> dict:
    """Load the request's query string with ``schema``; a bad parameter is a 400 naming it."""
    args = request.args.to_dict()
    for name in TIMESTAMP_PARAMETERS:
        if name in args:
            args[name] = _OFFSET_WITH_SPACE.sub(r"+\1", args[name])
    try:
        return schema.load(args)
    except ValidationError as exc:
        name, message = parameter_errors(exc.messages)
        raise ApiError(400, "invalid_parameter", f"{name}: {message}", parameter=name) from None

"""GET /v1/conflicts: the conflicting duplicates the drain recorded (admin), in keyset pages."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify
from marshmallow import Schema, fields, validate

from common.database import load_sql
from common.streams import format_ts
from web import db
from web.errors import ApiError
from web.history import WindowPageQuerySchema, decode_cursor, encode_cursor
from web.params import DEVICE_ID_RULE, EARLIEST, LATEST, parse_query
from web.schemas import DEVICE_ID_PATTERN, DEVICE_ID_REGEX

bp = Blueprint("conflicts", __name__)
_SCOPE = "conflicts"


class ConflictsQuerySchema(WindowPageQuerySchema):
    """The query of GET /v1/conflicts: the window applies to the readings' timestamps."""

    deviceId = fields.String(
        load_default=None,
        validate=validate.Regexp(DEVICE_ID_REGEX, error=f"Must be {DEVICE_ID_RULE}."),
        metadata={"description": "Only this meter's or vehicle's", "pattern": DEVICE_ID_PATTERN},
    )


class ConflictSchema(Schema):
    """A reading that arrived for a (device, timestamp) history already held with other values."""

    kind = fields.String(required=True, metadata={"enum": ["meter", "vehicle"]})
    deviceId = fields.String(required=True)
    timestamp = fields.String(required=True, metadata={"format": "date-time"})
    stored = fields.Dict(required=True, metadata={"description": "The values history kept (the first)"})
    rejected = fields.Dict(required=True, metadata={"description": "The values that arrived later"})
    recordedAt = fields.String(required=True, metadata={"format": "date-time"})


class ConflictsSchema(Schema):
    """A page of conflicts, oldest reading first."""

    conflicts = fields.List(fields.Nested(ConflictSchema), required=True)
    next = fields.String(required=True, allow_none=True, metadata={"description": "Cursor of the next page"})


_query_schema = ConflictsQuerySchema()


def _conflict(row: tuple) -> dict:
    _, kind, device_id, ts, stored, rejected, recorded_at = row
    return {"kind": kind, "deviceId": device_id, "timestamp": format_ts(ts), "stored": stored,
            "rejected": rejected, "recordedAt": format_ts(recorded_at)}


def _requires_admin(view):
    """Mark the view as admin-only for web.auth once the identity layer exists (a GET defaults to read)."""
    try:
        from web.auth import requires_scope
    except ImportError:  # the identity layer has not landed: nothing checks scopes yet
        return view
    return requires_scope("admin")(view)


@bp.get("/v1/conflicts")
@_requires_admin
def list_conflicts():
    """List recorded conflicting duplicates, oldest reading first."""
    query = parse_query(_query_schema)
    after_ts, after_id = EARLIEST, 0
    if query["cursor"]:
        position = decode_cursor(f"{_SCOPE}:{query['deviceId'] or ''}", query["cursor"])
        try:
            after_ts, after_id = datetime.fromisoformat(position[0]), int(position[1])
        except (TypeError, ValueError, IndexError):
            raise ApiError(400, "invalid_parameter", "cursor: Not a cursor of this listing.",
                           parameter="cursor") from None
    params = {"device_id": query["deviceId"], "after_ts": after_ts, "after_id": after_id,
              "from_ts": (query["from_"] or EARLIEST).astimezone(UTC), "to_ts": (query["to"] or LATEST).astimezone(UTC),
              "limit": query["limit"] + 1}
    rows = db.run_read(lambda conn: conn.execute(load_sql("conflicts/page"), params).fetchall())
    more = len(rows) > query["limit"]
    rows = rows[: query["limit"]]
    next_cursor = None
    if more:
        next_cursor = encode_cursor(f"{_SCOPE}:{query['deviceId'] or ''}", [rows[-1][3].isoformat(), rows[-1][0]])
    return jsonify({"conflicts": [_conflict(row) for row in rows], "next": next_cursor})

"""GET /v1/devices/silent: devices whose newest reading is older than ``for``, oldest first.

One range query on each shard's newest-reading sorted set of the kind (``KeySpace.newest``), which
the ingest script moves forward only; so the answer costs the same at 100,000 devices as at 10.
With several shards each one gives its first ``limit + 1`` devices past the cursor and the pages
are merged by (time, id), the order one set would give.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from flask import Blueprint, current_app, jsonify
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from common.settings import parse_duration
from common.streams import KIND_NAMES, format_ts
from web.errors import ApiError
from web.fleet import decode_cursor, encode_cursor
from web.params import parse_query

bp = Blueprint("silent_devices", __name__)

MAX_PAGE = 1000
DEFAULT_PAGE = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = {name: kind for kind, name in KIND_NAMES.items()}


class SilentQuerySchema(Schema):
    """The query of GET /v1/devices/silent."""

    class Meta:
        unknown = EXCLUDE

    kind = fields.String(required=True, validate=validate.OneOf(tuple(_KINDS)))
    silent_for = fields.String(data_key="for", load_default=None, metadata={
        "description": "How long without a reading makes a device silent: 900, 90s, 15m, 2h, 1d; "
                       "default SILENT_AFTER (15m)"})
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(min=1, max=MAX_PAGE))
    cursor = fields.String(load_default=None, validate=validate.Length(max=512))

    @validates("silent_for")
    def _duration(self, value: str | None, data_key: str, **kwargs) -> None:
        if value is not None and not parse_duration(value):
            raise ValidationError("Must be a positive duration such as 900, 90s, 15m or 2h.")


_schema = SilentQuerySchema()


def silent_count(client, keys, kind: str, seconds: int, now: float | None = None) -> int:
    """Return how many devices of ``kind`` have had no reading for ``seconds`` (the gauge), every shard."""
    cutoff = int(((time.time() if now is None else now) - seconds) * 1_000_000)
    return sum(int(client.zcount(key, "-inf", f"({cutoff}")) for key in keys.all_newest(kind))


def _page_of_set(client, key: str, start: str, cutoff: int, after: tuple[int, str] | None,
                 limit: int) -> list[tuple[str, float]]:
    """Return up to ``limit + 1`` of the set's members older than ``cutoff`` past ``after``, in (time, id) order."""
    devices: list[tuple[str, float]] = []
    offset = 0
    # Members with the same time sort by id: skip those at or before the cursor's (score, id).
    while len(devices) <= limit:
        chunk = client.zrange(key, start, f"({cutoff}", byscore=True, offset=offset, num=limit + 1,
                              withscores=True)
        if not chunk:
            break
        offset += len(chunk)
        for member, score in chunk:
            if after is None or (int(score), member) > after:
                devices.append((member, score))
        if len(chunk) < limit + 1:
            break
    return devices[:limit + 1]


@bp.get("/v1/devices/silent")
def silent_devices():
    """Return the devices of a kind whose newest reading is older than ``for``, oldest first."""
    settings = current_app.config["SETTINGS"]
    query = parse_query(_schema)
    kind_name = query["kind"]
    seconds = parse_duration(query["silent_for"]) if query["silent_for"] else settings.silent_after
    client = current_app.extensions["redis"]
    sets = current_app.extensions["redis_keys"].all_newest(_KINDS[kind_name])
    cutoff = int((time.time() - seconds) * 1_000_000)
    limit = query["limit"]
    start = "-inf"
    after: tuple[int, str] | None = None
    if query["cursor"]:
        state = decode_cursor(query["cursor"], settings.cursor_key())
        try:
            if state["kind"] != kind_name:
                raise ValueError("another kind")
            after = (int(state["score"]), str(state["id"]))
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "invalid_parameter", "cursor: Not a cursor of this query.",
                           parameter="cursor") from None
        start = str(after[0])
    devices = [device for key in sets for device in _page_of_set(client, key, start, cutoff, after, limit)]
    if len(sets) > 1:
        devices.sort(key=lambda device: (int(device[1]), device[0]))
    page = devices[:limit]
    next_cursor = None
    if len(devices) > limit:
        last_id, last_score = page[-1]
        next_cursor = encode_cursor({"kind": kind_name, "score": int(last_score), "id": last_id},
                                    settings.cursor_key())
    return jsonify({
        "devices": [{"id": member, "kind": kind_name,
                     "lastTimestamp": format_ts(_EPOCH + timedelta(microseconds=int(score)))}
                    for member, score in page],
        "silentForSeconds": seconds,
        "next": next_cursor,
    })


class _SilentDevice(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    lastTimestamp = fields.String(required=True, metadata={"format": "date-time"})


class SilentPageSchema(Schema):
    """A page of silent devices, oldest first."""

    devices = fields.List(fields.Nested(_SilentDevice), required=True)
    silentForSeconds = fields.Integer(required=True)
    next = fields.String(required=True, allow_none=True)

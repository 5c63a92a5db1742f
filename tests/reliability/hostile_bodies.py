"""Hypothesis strategies for ``POST /v1/telemetry`` bodies: valid readings at the edges and hostile ones.

Every case is a ``Case``: the raw bytes sent, the content type, the device ids it names and
whether it is valid. ``valid`` is True (must be 202), False (certainly invalid by construction:
must be 4xx) -- the strategies never guess.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from web.schemas import DEVICE_ID_PATTERN

# The limits the suite's stack runs with (the defaults of common/settings.py).
RETENTION = timedelta(days=90)
CLOCK_SKEW = timedelta(seconds=300)
MAX_READINGS = 5000
MAX_BYTES = 4 * 1024 * 1024
# Keep clear of the window's edges by this much: the request reaches the server a little later.
MARGIN = timedelta(minutes=10)

_ID = re.compile(DEVICE_ID_PATTERN)
_unique = itertools.count()


@dataclass
class Case:
    """One request body and what the server must do with it."""

    body: bytes
    valid: bool
    device_ids: list[tuple[str, str]]  # (kind, id) of every item that names a well-formed id
    items: int  # readings in the body when it is an array, else 1
    content_type: str = "application/json"
    label: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


# -- valid readings -----------------------------------------------------------------------------

unique_ids = st.builds(
    lambda tail: f"h{next(_unique)}.{tail}"[:64],
    st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True),
)

_offsets = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
                            timezone(timedelta(hours=23, minutes=59)), timezone(timedelta(minutes=-30)),
                            timezone(timedelta(hours=5, minutes=45))])


@st.composite
def valid_timestamps(draw) -> str:
    """A timestamp inside the accepted window, edges included (up to MARGIN from them), any offset."""
    now = _now()
    oldest, newest = now - RETENTION + MARGIN, now + CLOCK_SKEW - timedelta(seconds=60)
    edge = draw(st.sampled_from(["old edge", "new edge", "inside"]))
    if edge == "old edge":
        ts = oldest + timedelta(seconds=draw(st.integers(0, 3600)))
    elif edge == "new edge":
        ts = newest - timedelta(seconds=draw(st.integers(0, 120)))
    else:
        ts = now - timedelta(seconds=draw(st.integers(0, int((RETENTION - MARGIN).total_seconds()))))
    ts = ts.replace(microsecond=draw(st.sampled_from([0, 1, 500_000, 999_999])))
    text = ts.astimezone(draw(_offsets)).isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


def _number(low: float, high: float):
    """Finite numbers in [low, high], the bounds themselves often, ints as well as floats."""
    return st.one_of(
        st.sampled_from([low, high]),
        st.floats(low, high, allow_nan=False, allow_infinity=False),
        st.integers(int(low) if low == int(low) else int(low) + 1, int(high)),
    )


_extra_fields = st.dictionaries(st.sampled_from(["note", "firmware", "x", "meter_id", "SOC", "_ts"]),
                                st.one_of(st.none(), st.integers(), st.text(max_size=20)), max_size=2)


@st.composite
def valid_reading(draw) -> dict:
    """A valid meter or vehicle reading with a fresh id (so that its writes are visible)."""
    device_id = draw(unique_ids)
    extra = draw(_extra_fields)
    if draw(st.booleans()):
        fields = {"meterId": device_id, "kwhConsumedAc": draw(_number(0, 1e12)),
                  "voltage": draw(st.one_of(st.just(1000), st.floats(1e-6, 1000, allow_nan=False)))}
    else:
        fields = {"vehicleId": device_id, "soc": draw(_number(0, 100)), "kwhDeliveredDc": draw(_number(0, 1e12)),
                  "batteryTemp": draw(_number(-50, 150))}
    return {**extra, **fields, "timestamp": draw(valid_timestamps())}


# -- invalid by construction ---------------------------------------------------------------------

_not_a_number = st.one_of(st.none(), st.booleans(), st.text(max_size=30), st.just("50"), st.just("1e3"),
                          st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                               max_size=2))
_out_of_range = {
    "kwhConsumedAc": st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                               st.floats(min_value=1.0000001e12, allow_nan=False, allow_infinity=False),
                               st.integers(min_value=10**12 + 1, max_value=10**40)),
    "voltage": st.one_of(st.floats(max_value=0, allow_nan=False, allow_infinity=False),
                         st.floats(min_value=1000.0001, allow_nan=False, allow_infinity=False)),
    "soc": st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                     st.floats(min_value=100.0001, allow_nan=False, allow_infinity=False)),
    "kwhDeliveredDc": st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                                st.integers(min_value=-(10**40), max_value=-1)),
    "batteryTemp": st.one_of(st.floats(max_value=-50.0001, allow_nan=False, allow_infinity=False),
                             st.floats(min_value=150.0001, allow_nan=False, allow_infinity=False)),
}
_bad_ids = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
    st.just(""), st.just("a" * 65), st.just("x" * 200_000), st.just("bad id"), st.just("ü"), st.just("a/b"),
    st.text(min_size=1, max_size=80).filter(lambda s: not _ID.match(s)),
)


@st.composite
def invalid_timestamps(draw):
    """A timestamp the API must refuse: outside the window, naive, malformed, or not a string."""
    now = _now()
    choice = draw(st.integers(0, 6))
    if choice == 0:  # in the future beyond the allowed skew
        return (now + CLOCK_SKEW + MARGIN + timedelta(seconds=draw(st.integers(0, 10**8)))).isoformat()
    if choice == 1:  # older than retention
        return (now - RETENTION - MARGIN - timedelta(seconds=draw(st.integers(0, 10**9)))).isoformat()
    if choice == 2:  # naive (no offset)
        return (now - timedelta(minutes=5)).replace(tzinfo=None).isoformat()
    if choice == 3:
        return draw(st.sampled_from([
            "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59-14:00", "2026-02-30T10:00:00Z", "2026-11-26T24:00:01Z", "2026-11-26T10:61:00Z",
            "2026-06-30T23:59:60Z", "2026-11-26", "10:00:00Z", "", " ", "now", "2026-11-26T10:00:00+25:00",
            "1e10", "2026-11-26T10:00:00Z" * 1000, "\u0000",
        ]))
    if choice == 4:
        return draw(st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(),
                              st.lists(st.integers(), max_size=2)))
    if choice == 5:  # a date far in the past with an otherwise valid shape
        return datetime(draw(st.integers(1, 1999)), 1, 1, tzinfo=UTC).isoformat()
    return draw(st.text(max_size=40).filter(lambda s: not s[:1].isdigit()))


@st.composite
def invalid_reading(draw) -> object:
    """A reading broken in exactly one way that the API must refuse."""
    reading = draw(valid_reading())
    kind_field = "meterId" if "meterId" in reading else "vehicleId"
    values = ["kwhConsumedAc", "voltage"] if kind_field == "meterId" else ["soc", "kwhDeliveredDc", "batteryTemp"]
    how = draw(st.sampled_from(["missing", "type", "range", "id", "timestamp", "both ids", "no id", "not object"]))
    if how == "missing":
        del reading[draw(st.sampled_from([*values, "timestamp"]))]
    elif how == "type":
        reading[draw(st.sampled_from(values))] = draw(_not_a_number)
    elif how == "range":
        name = draw(st.sampled_from(values))
        reading[name] = draw(_out_of_range[name])
    elif how == "id":
        reading[kind_field] = draw(_bad_ids)
    elif how == "timestamp":
        reading["timestamp"] = draw(invalid_timestamps())
    elif how == "both ids":
        reading["vehicleId" if kind_field == "meterId" else "meterId"] = draw(unique_ids)
    elif how == "no id":
        del reading[kind_field]
    else:
        return draw(st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3)))
    return reading


def _ids(items: list) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if isinstance(item, dict):
            for kind, name in (("meter", "meterId"), ("vehicle", "vehicleId")):
                value = item.get(name)
                if isinstance(value, str) and _ID.match(value):
                    out.append((kind, value))
    return out


def _encode(payload) -> bytes:
    # allow_nan: NaN and Infinity go out as the bare words JavaScript uses, which JSON forbids.
    return json.dumps(payload, allow_nan=True).encode()


@st.composite
def mixed_batches(draw) -> Case:
    """A single reading or a batch; valid readings with, sometimes, one broken item among them."""
    single = draw(st.booleans())
    good = [draw(valid_reading()) for _ in range(1 if single else draw(st.integers(1, 30)))]
    poisoned = draw(st.booleans())
    items = list(good)
    if poisoned:
        bad = draw(invalid_reading())
        if single:
            items = [bad]
        else:
            items.insert(draw(st.integers(0, len(items))), bad)
    body = items[0] if single else items
    return Case(_encode(body), not poisoned, _ids(items), len(items), label="mixed")


# -- hostile bodies (all invalid) -------------------------------------------------------------------

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80),
                          st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
_json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=30)


def _valid_item_bytes() -> bytes:
    return _encode({"meterId": "m", "kwhConsumedAc": 1.0, "voltage": 230.0,
                    "timestamp": (_now() - timedelta(minutes=5)).isoformat()})


@st.composite
def hostile_bodies(draw) -> Case:
    """A body that must be refused with a 4xx and leave nothing behind."""
    kind = draw(st.sampled_from([
        "invalid reading", "poisoned batch", "random json", "random bytes", "invalid utf-8", "truncated",
        "nan literal", "deep nesting", "huge array", "all-invalid batch", "huge body", "huge string", "scalar body",
        "wrong content type",
    ]))
    content_type = "application/json"
    if kind == "invalid reading":
        item = draw(invalid_reading())
        return Case(_encode(item), False, _ids([item]), 1, label=kind)
    if kind == "poisoned batch":
        case = draw(mixed_batches().filter(lambda c: not c.valid))
        case.label = kind
        return case
    if kind == "random json":
        value = draw(_json_values)
        if isinstance(value, dict):
            value["meterId"] = value["vehicleId"] = "both"  # never a reading by accident
        return Case(_encode(value), False, [], 1, label=kind)
    if kind == "random bytes":
        data = draw(st.binary(min_size=0, max_size=200))
        if data.strip().startswith((b"{", b"[")):
            data = b"\x00" + data  # a random blob that parses as a reading is not something to guess about
        return Case(data, False, [], 1, label=kind)
    if kind == "invalid utf-8":
        raw = _valid_item_bytes()
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
        at = raw.index(b'"m"') + 2
        return Case(raw[:at] + bad + raw[at:], False, [], 1, label=kind)
    if kind == "truncated":
        raw = _valid_item_bytes()
        return Case(raw[: draw(st.integers(0, len(raw) - 1))], False, [], 1, label=kind)
    if kind == "nan literal":
        raw = _valid_item_bytes().replace(b"1.0", draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400",
                                                                           b"-1e400", b"9" * 400])))
        return Case(raw, False, [], 1, label=kind)
    if kind == "deep nesting":
        depth = draw(st.sampled_from([600, 1025, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return Case(opener * depth + b"1" + closer * depth, False, [], 1, label=kind)
    if kind == "huge array":
        count = draw(st.sampled_from([MAX_READINGS + 1, 20_000]))
        return Case(b"[" + b",".join([_valid_item_bytes()] * count) + b"]", False, [], count, label=kind)
    if kind == "all-invalid batch":
        item = draw(invalid_reading())
        # Not a gigabyte when the item holds a huge string (the full 5,000 is one of the fixed examples).
        count = min(draw(st.sampled_from([2, 50, 500])), max(2, 2 * MAX_BYTES // len(_encode(item))))
        return Case(_encode([item] * count), False, _ids([item]), count, label=kind)
    if kind == "huge body":
        size = MAX_BYTES + draw(st.sampled_from([1, 1024 * 1024]))
        return Case(b'{"meterId": "' + b"a" * size + b'"}', False, [], 1, label=kind)
    if kind == "huge string":
        field = draw(st.sampled_from(["meterId", "timestamp", "note", "kwhConsumedAc"]))
        item = {"meterId": "m", "kwhConsumedAc": 1.0, "voltage": 230.0, "timestamp": _now().isoformat(),
                field: "z" * draw(st.sampled_from([10_000, 1_000_000, 3_000_000]))}
        if field == "note":
            item["voltage"] = -1.0  # the huge string is an ignored field: break the reading elsewhere
        return Case(_encode(item), False, [], 1, label=kind)
    if kind == "scalar body":
        value = draw(st.one_of(_json_scalars, st.just([]), st.just({}), st.just([[]]), st.just([{}])))
        return Case(_encode(value), False, [], 1, label=kind)
    content_type = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                         "application/xml"]))
    item = draw(valid_reading())
    return Case(_encode(item), False, _ids([item]), 1, content_type=content_type, label=kind)


def fixed_hostile_examples() -> list[Case]:
    """The expensive edges, sent once each rather than drawn at random."""
    item = _valid_item_bytes()
    bad = _encode({"meterId": "m", "kwhConsumedAc": -1, "voltage": 230.0,
                   "timestamp": (_now() - timedelta(minutes=5)).isoformat()})
    return [
        Case(b"[" + b",".join([bad] * MAX_READINGS) + b"]", False, [], MAX_READINGS, label="all-invalid batch"),
        Case(b"[" + b",".join([item] * (MAX_READINGS - 1) + [bad]) + b"]", False, [("meter", "m")], MAX_READINGS,
             label="poisoned batch"),
        Case(b"[" + b",".join([item] * (MAX_READINGS + 1)) + b"]", False, [], MAX_READINGS + 1, label="huge array"),
        Case(b"[" * 100_000 + b"]" * 100_000, False, [], 1, label="deep nesting"),
        Case(b'{"meterId": "' + b"a" * (MAX_BYTES + 1) + b'"}', False, [], 1, label="huge body"),
        Case(b'{"meterId": "' + b"a" * (64 * 1024 * 1024) + b'"}', False, [], 1, label="huge body"),
    ]

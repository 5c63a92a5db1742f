"""Redis key names and the stream record format: the contract between web and workers.

Every accepted reading becomes one stream entry with two fields:

- ``k``: the kind, ``m`` (meter) or ``v`` (vehicle);
- ``r``: the history row as one line of PostgreSQL COPY text format, tab separated, in the
  column order of ``meter_readings`` / ``vehicle_readings``:
  ``meter_id, ts, kwh_consumed_ac, voltage`` or ``vehicle_id, ts, soc, kwh_delivered_dc, battery_temp``.

Ids are restricted to ``[A-Za-z0-9._:-]`` and numbers are finite floats, so no COPY escaping is
ever needed and the drain can feed the rows to COPY unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

STREAM_KEY = "telemetry:stream"
CONSUMER_GROUP = "drain"
DEAD_LETTER_STREAM_KEY = "telemetry:dead"
# Bumped (INCR) on every key revocation; each web process polls it to drop its key cache (web/auth.py).
API_KEYS_VERSION_KEY = "auth:keys:version"

METER = "m"
VEHICLE = "v"
KINDS = (METER, VEHICLE)

# Column order of the history tables, which is also the order of the fields in a record.
HISTORY_COLUMNS = {
    METER: ("meter_id", "ts", "kwh_consumed_ac", "voltage"),
    VEHICLE: ("vehicle_id", "ts", "soc", "kwh_delivered_dc", "battery_temp"),
}
# The API (camelCase) name of each value column, in the same order.
API_FIELDS = {
    METER: ("kwhConsumedAc", "voltage"),
    VEHICLE: ("soc", "kwhDeliveredDc", "batteryTemp"),
}
ID_FIELD = {METER: "meterId", VEHICLE: "vehicleId"}
KIND_NAMES = {METER: "meter", VEHICLE: "vehicle"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def latest_key(kind: str, device_id: str) -> str:
    """Return the Redis hash holding a device's latest reading."""
    return f"latest:{KIND_NAMES[kind]}:{device_id}"


def newest_key(kind: str, shard: int | None = None) -> str:
    """Return the sorted set of each device's newest reading time (epoch micros) of a kind.

    Silent devices are one range query on it. ``shard`` names a stream shard's own set (hash-tagged
    with the shard, so that a Redis Cluster keeps it in the ingest script's slot); None: the one set.
    """
    name = f"newest:{KIND_NAMES[kind]}"
    return name if shard is None else f"{{s{shard}}}{name}"


def epoch_micros(ts: datetime) -> int:
    """Return ``ts`` as whole microseconds since the Unix epoch (exact, no float rounding)."""
    return (ts - _EPOCH) // _MICROSECOND


def format_ts(ts: datetime) -> str:
    """Return ``ts`` in UTC as ISO-8601 with an explicit offset."""
    return ts.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated reading, kind-agnostic: the id, the UTC timestamp and the values in column order."""

    kind: str
    device_id: str
    ts: datetime
    values: tuple[float, ...]

    def copy_row(self) -> str:
        """Return the history row as a COPY text line (without the newline)."""
        return "\t".join((self.device_id, format_ts(self.ts), *map(repr, self.values)))


def parse_copy_row(kind: str, row: str | bytes) -> dict:
    """Turn a record's COPY line back into an API-shaped dict (for inspection and dead letters)."""
    if isinstance(row, bytes):
        row = row.decode()
    device_id, ts, *values = row.split("\t")
    out = {ID_FIELD[kind]: device_id, "timestamp": ts}
    out.update(zip(API_FIELDS[kind], map(float, values), strict=True))
    return out

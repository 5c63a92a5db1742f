"""Redis key names, shards and the stream record format: the contract between web and workers.

Nothing outside this module spells a Redis key: every name comes from a ``KeySpace`` method that
takes the shard, or from a constant here.

**Shards.** ``STREAM_SHARDS`` (N, default 1) streams; a device's shard is
``crc32("<kind name>:<device id>") % N`` (zlib's CRC-32 of the UTF-8 text, e.g. ``meter:m-1``):
stable across processes, machines and Python versions (tests/test_shards.py holds a fixed table).
Changing N moves devices between shards: docs/scaling.md says how to do it safely.

**Key layout.** With one shard on a single Redis the keys are the ones of before shards existed
(``telemetry:stream``, ``latest:meter:<id>``...), so an upgrade needs no migration. With more
shards, or on a Redis Cluster, every key of shard K carries the hash tag ``{sK}``
(``telemetry:{s7}:stream``, ``latest:{s7}:meter:<id>``), so one shard's stream, dead letters,
failure counts and its devices' latest hashes share one cluster slot and one script can touch
them all.

**Stream record.** One entry per ingest request and shard. Its fields are the kinds present,
``m`` (meter) and/or ``v`` (vehicle), each holding that kind's history rows in PostgreSQL COPY
text format, one row per line (``\\n`` separated), tab-separated columns in the order of
``HISTORY_COLUMNS``: ``meter_id, ts, kwh_consumed_ac, voltage`` or ``vehicle_id, ts, soc,
kwh_delivered_dc, battery_temp``. Entries written before this format (``k`` the kind, ``r`` one
row) are still read. Ids are restricted to ``[A-Za-z0-9._:-]`` and numbers are finite floats, so
no COPY escaping is ever needed and the drain feeds the rows to COPY unchanged.
"""

from __future__ import annotations

import textwrap
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

CONSUMER_GROUP = "drain"
# Bumped (INCR) on every key revocation; each web process polls it to drop its key cache (web/auth.py).
API_KEYS_VERSION_KEY = "auth:keys:version"
# Metrics shared by every process (common/metrics.py): one hash of counters, one histogram.
COUNTERS_KEY = "metrics:counters"
DRAIN_SECONDS_KEY = "metrics:drain_batch_seconds"
# Set (with a short time to live) by a drain whose read came back full: it is behind, the rollups
# fold waits (scheduler/rollups.py DrainFirst).
DRAIN_BEHIND_KEY = "drain:behind"
# Flask-Limiter's key prefix (its counters live on REDIS_URL, web/rate_limit.py).
RATE_LIMIT_PREFIX = "ratelimit"

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
# The fields of a record written before one entry held a whole request (one reading an entry).
LEGACY_KIND_FIELD, LEGACY_ROW_FIELD = "k", "r"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def shard_of(kind: str, device_id: str, shards: int) -> int:
    """Return the shard (0..shards-1) of a device: CRC-32 of ``<kind name>:<id>`` modulo ``shards``."""
    if shards == 1:
        return 0
    return zlib.crc32(f"{KIND_NAMES[kind]}:{device_id}".encode()) % shards


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Every shard-aware Redis key name of a deployment: ``shards`` streams, hash-tagged when ``tagged``."""

    shards: int = 1
    tagged: bool = False

    def __post_init__(self):
        if self.shards < 1:
            raise ValueError("shards must be >= 1")
        if self.shards > 1 and not self.tagged:
            object.__setattr__(self, "tagged", True)  # several shards always carry their tag

    @classmethod
    def for_settings(cls, settings) -> KeySpace:
        """Return the key space of ``settings`` (STREAM_SHARDS, REDIS_CLUSTER_URL)."""
        return cls(settings.stream_shards, tagged=settings.stream_shards > 1 or bool(settings.redis_cluster_url))

    def _prefix(self, base: str, shard: int) -> str:
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is not in 0..{self.shards - 1}")
        return f"{base}:{{s{shard}}}" if self.tagged else base

    def shard_of(self, kind: str, device_id: str) -> int:
        """Return the shard of a device."""
        return shard_of(kind, device_id, self.shards)

    def stream(self, shard: int) -> str:
        """Return the stream of ``shard``: the accepted readings not yet known to be in Postgres."""
        return self._prefix("telemetry", shard) + ":stream"

    def dead_letters(self, shard: int) -> str:
        """Return the dead-letter stream of ``shard`` (readings the drain gave up on)."""
        return self._prefix("telemetry", shard) + ":dead"

    def failures(self, shard: int) -> str:
        """Return the hash counting each of ``shard``'s entries' failed writes."""
        return self._prefix("telemetry", shard) + ":failures"

    def latest(self, kind: str, device_id: str, shard: int | None = None) -> str:
        """Return the hash holding a device's latest reading (``shard`` when the caller knows it)."""
        shard = self.shard_of(kind, device_id) if shard is None else shard
        return f"{self._prefix('latest', shard)}:{KIND_NAMES[kind]}:{device_id}"

    def newest(self, kind: str, shard: int) -> str:
        """Return the sorted set of ``shard``'s devices of a kind, scored by their newest reading (epoch micros).

        The ingest script moves a score forward only; silent devices are one range query per shard.
        """
        return f"{self._prefix('newest', shard)}:{KIND_NAMES[kind]}"

    def all_newest(self, kind: str) -> list[str]:
        """Return every shard's newest-reading set of a kind, in shard order."""
        return [self.newest(kind, shard) for shard in range(self.shards)]

    def all_streams(self) -> list[str]:
        """Return every shard's stream, in shard order."""
        return [self.stream(shard) for shard in range(self.shards)]


# The single-shard, single-Redis layout (the default), and its keys, for the code and tests that use it.
SINGLE = KeySpace()
STREAM_KEY = SINGLE.stream(0)
DEAD_LETTER_STREAM_KEY = SINGLE.dead_letters(0)
FAILURES_KEY = SINGLE.failures(0)


def latest_key(kind: str, device_id: str) -> str:
    """Return the latest hash of a device in the single-shard layout."""
    return SINGLE.latest(kind, device_id, 0)


def drain_slot_job_key(slot: int) -> str:
    """Return the RQ Redis key naming the job that holds drain slot ``slot``."""
    return f"drain:slot:{slot}:job"


def drain_slot_heartbeat_key(slot: int) -> str:
    """Return the RQ Redis key a running drain of ``slot`` keeps alive."""
    return f"drain:slot:{slot}:heartbeat"


def encode_record(rows_by_kind: dict[str, list[str]]) -> dict[str, str]:
    """Return the stream entry's fields for the rows of one request and shard."""
    return {kind: "\n".join(rows) for kind, rows in rows_by_kind.items() if rows}


def decode_record(fields: dict) -> dict[str, list[str]] | None:
    """Return an entry's COPY rows by kind, or None when the entry is not a record this engine wrote."""
    if LEGACY_KIND_FIELD in fields or LEGACY_ROW_FIELD in fields:
        kind, row = fields.get(LEGACY_KIND_FIELD), fields.get(LEGACY_ROW_FIELD)
        if kind not in KINDS or not row or set(fields) - {LEGACY_KIND_FIELD, LEGACY_ROW_FIELD}:
            return None
        return {kind: [row]}
    if not fields or set(fields) - set(KINDS):
        return None
    rows = {kind: fields[kind].split("\n") for kind in KINDS if fields.get(kind)}
    return rows or None


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


# -- Lua ---------------------------------------------------------------------------------------
#
# A latest hash holds ``_ts`` (epoch micros, for the forward-only compare) and ``json``, the whole
# API answer, rendered once at write time (reads send it as it is). Per reading a script takes:
# kind, epoch micros, the JSON answer, the device id. A hash of the older layout (``timestamp`` and
# a field per value beside them) is replaced whole when it moves.
READING_ARGS = 4
# Per reading, with ``key`` its hash, ``held`` that hash's HMGET of ``_ts`` and ``timestamp`` (only
# the older layout has it), ``move`` the caller's verdict and ARGV[a + 1 .. a + 4] the reading's
# arguments: the move, and the time to live refreshed (the device spoke, even with an old reading).
_MOVE_HASH = """if move then
  if held[2] then redis.call('DEL', key) end
  redis.call('HSET', key, '_ts', ARGV[a + 2], 'json', ARGV[a + 3])
end
redis.call('EXPIRE', key, ttl)"""


# One atomic call per ingest request (single Redis) or per shard (cluster). First the caller's
# rate limit: KEYS[1] is its fixed-window counter, ARGV[1] the limit (0: none), ARGV[2] the window
# in seconds; the same INCRBY-then-EXPIRE that Flask-Limiter's Redis storage runs on the same key
# (web/rate_limit.py), so ingest and the other routes share one count per key. Over the limit the
# script writes nothing and returns minus the seconds until the window ends. ARGV[3] is the
# hashes' time to live (LATEST_TTL_DAYS, refreshed by every reading of the device), ARGV[4] the
# number of shard groups. Each group: its stream and its newest-reading sets (one a kind, in KINDS
# order) among the KEYS, then its readings' hashes; in ARGV its reading count, its meter rows, its
# vehicle rows (COPY text, empty when none), then the readings' arguments. Per reading the hash
# moves forward only when the reading is strictly newer, and so does the device's score in its
# kind's newest-reading set (ZADD GT: an old reading arriving late does not make a silent device
# look alive); then the group's rows become one stream entry. Everything in one script: an accepted reading is
# always in the stream, there is no state where Redis took one half and not the other.
_NEWEST_MAP = "{" + ", ".join(f"{kind} = KEYS[k + {i + 1}]" for i, kind in enumerate(KINDS)) + "}"

INGEST_LUA = f"""
local limit = tonumber(ARGV[1])
if limit > 0 then
  local count = redis.call('INCRBY', KEYS[1], 1)
  if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  if count > limit then
    local left = redis.call('TTL', KEYS[1])
    if left < 1 then left = 1 end
    return -left
  end
end
local ttl = ARGV[3]
local k, a = 1, 4
local taken = 0
for g = 1, tonumber(ARGV[4]) do
  k = k + 1
  local stream = KEYS[k]
  local newest = {_NEWEST_MAP}
  k = k + {len(KINDS)}
  local n = tonumber(ARGV[a + 1])
  local meters, vehicles = ARGV[a + 2], ARGV[a + 3]
  a = a + 3
  for i = 1, n do
    k = k + 1
    local key = KEYS[k]
    local newest_key = newest[ARGV[a + 1]]
    if not newest_key then return redis.error_reply('unknown kind ' .. tostring(ARGV[a + 1])) end
    local held = redis.call('HMGET', key, '_ts', 'timestamp')
    local move = (not held[1]) or tonumber(held[1]) < tonumber(ARGV[a + 2])
{textwrap.indent(_MOVE_HASH, "    ")}
    redis.call('ZADD', newest_key, 'GT', ARGV[a + 2], ARGV[a + 4])
    a = a + {READING_ARGS}
  end
  if meters ~= '' and vehicles ~= '' then
    redis.call('XADD', stream, '*', '{METER}', meters, '{VEHICLE}', vehicles)
  elseif meters ~= '' then
    redis.call('XADD', stream, '*', '{METER}', meters)
  elseif vehicles ~= '' then
    redis.call('XADD', stream, '*', '{VEHICLE}', vehicles)
  end
  taken = taken + n
end
return taken
"""

# Refill hashes from Postgres (a read that missed, or a rebuild after Redis lost its data) with the
# same rule as ingest: a hash only moves forward in time, so a refill never overwrites a newer
# reading that arrived meanwhile. (The same reading again is written only to a hash of an older
# layout: without ``json``, or with a field per value.) KEYS[2i-1] is the hash of reading
# i and KEYS[2i] its kind's newest-reading set in its shard (moved forward only, as ingest does, so
# a rebuild after Redis lost its data brings silent devices back too); ARGV[1] the time to live,
# then each reading's arguments. Returns how many hashes it wrote.
REFILL_LUA = f"""
local moved = 0
local ttl = ARGV[1]
local a = 1
for i = 1, #KEYS / 2 do
  local key = KEYS[2 * i - 1]
  local held = redis.call('HMGET', key, '_ts', 'timestamp', 'json')
  local ts = tonumber(ARGV[a + 2])
  local move = (not held[1]) or tonumber(held[1]) < ts
     or (tonumber(held[1]) == ts and (held[2] or not held[3]))
{textwrap.indent(_MOVE_HASH, "  ")}
  if move then moved = moved + 1 end
  redis.call('ZADD', KEYS[2 * i], 'GT', ARGV[a + 2], ARGV[a + 4])
  a = a + {READING_ARGS}
end
return moved
"""

# Read many devices' JSON answers in one call: KEYS are the hashes. Returns the found answers
# joined by commas (in KEYS order, ready to go between the brackets of a JSON array) and the
# 1-based positions of the keys with no answer. One HGET a device is the cheapest read a Lua
# script can do (~2 us); building 1,000 dicts in Python from separate fields took ~5 ms.
GET_MANY_LUA = """
local found, missing = {}, {}
for i = 1, #KEYS do
  local answer = redis.call('HGET', KEYS[i], 'json')
  if answer then found[#found + 1] = answer else missing[#missing + 1] = i end
end
return {table.concat(found, ','), missing}
"""

"""LatestStateStore: each device's newest reading in a Redis hash, plus the stream append."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from common.streams import (
    API_FIELDS,
    ID_FIELD,
    METER,
    STREAM_KEY,
    VEHICLE,
    Reading,
    epoch_micros,
    format_ts,
    latest_key,
    newest_key,
)
from web.redis_direct import DirectRedis

# Each device's latest reading is a hash: ``_ts`` (epoch micros, for the forward-only compare),
# ``timestamp`` and the values as the API names them, and ``json``, the whole API answer for that
# device, rendered once at write time so that reads return it as it is (see _GET_MANY_LUA).
#
# One atomic round trip per ingest request. First the caller's rate limit: KEYS[2] is its
# fixed-window counter, ARGV[1] the limit (0: none) and ARGV[2] the window in seconds; the same
# INCRBY-then-EXPIRE that Flask-Limiter's Redis storage runs on the same key (web/rate_limit.py),
# so ingest and the other routes share one count per key without a second round trip. Over the
# limit, the script writes nothing and returns minus the seconds until the window ends. Then,
# for each reading, in order: move the device's hash forward only when the reading is strictly
# newer than what it holds (an older or equal one leaves it alone), then append the reading to
# the stream. KEYS[1] is the stream, KEYS[i+2] the hash of reading i; from ARGV[3], eight values
# per reading: kind, epoch micros, ISO timestamp, three values (the third empty for a meter), the
# JSON answer and the COPY row; the last ARGV is the hashes' time to live in seconds
# (LATEST_TTL_DAYS), refreshed by every reading of the device, so a device that falls silent
# leaves Redis after that long (reads then come from Postgres). Doing both in one script means an
# accepted reading is always in the stream: there is no state where Redis took one half and not
# the other.
_INGEST_LUA = """
local stream = KEYS[1]
local ttl = ARGV[#ARGV]
local limit = tonumber(ARGV[1])
if limit > 0 then
  local count = redis.call('INCRBY', KEYS[2], 1)
  if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
  if count > limit then
    local left = redis.call('TTL', KEYS[2])
    if left < 1 then left = 1 end
    return -left
  end
end
local n = #KEYS - 4
for i = 1, n do
  local key = KEYS[i + 4]
  local a = (i - 1) * 9 + 2
  local kind = ARGV[a + 1]
  local ts = tonumber(ARGV[a + 2])
  local current = redis.call('HGET', key, '_ts')
  if (not current) or tonumber(current) < ts then
    if kind == 'm' then
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'kwhConsumedAc', ARGV[a + 4], 'voltage', ARGV[a + 5], 'json', ARGV[a + 7])
    else
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'soc', ARGV[a + 4], 'kwhDeliveredDc', ARGV[a + 5], 'batteryTemp', ARGV[a + 6],
                 'json', ARGV[a + 7])
    end
  end
  redis.call('EXPIRE', key, ttl)
  if kind == 'm' then
    redis.call('ZADD', KEYS[3], 'GT', ARGV[a + 2], ARGV[a + 9])
  else
    redis.call('ZADD', KEYS[4], 'GT', ARGV[a + 2], ARGV[a + 9])
  end
  redis.call('XADD', stream, '*', 'k', kind, 'r', ARGV[a + 8])
end
return n
"""

# Refill hashes from Postgres (a read that missed, or a rebuild after Redis lost its data) with the
# same rule as ingest: a hash only moves forward in time, so a refill never overwrites a newer
# reading that arrived meanwhile. (The same reading again is written only to add a missing
# ``json`` field, to a hash written before that field existed.) KEYS[i] is the hash of reading i;
# ARGV holds seven values per reading: kind, epoch micros, ISO timestamp, three values (the third
# empty for a meter) and the JSON answer, then the time to live in seconds: every hash the refill
# touches gets it, so a refilled device leaves Redis again if it stays silent. Returns how many
# hashes it wrote.
_REFILL_LUA = """
local moved = 0
local ttl = ARGV[#ARGV]
for i = 1, #KEYS do
  local key = KEYS[i]
  local a = (i - 1) * 7
  local ts = tonumber(ARGV[a + 2])
  local current = redis.call('HGET', key, '_ts')
  if (not current) or tonumber(current) < ts
     or (tonumber(current) == ts and redis.call('HEXISTS', key, 'json') == 0) then
    if ARGV[a + 1] == 'm' then
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'kwhConsumedAc', ARGV[a + 4], 'voltage', ARGV[a + 5], 'json', ARGV[a + 7])
    else
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'soc', ARGV[a + 4], 'kwhDeliveredDc', ARGV[a + 5], 'batteryTemp', ARGV[a + 6],
                 'json', ARGV[a + 7])
    end
    moved = moved + 1
  end
  redis.call('EXPIRE', KEYS[i], ttl)
end
return moved
"""

# Read many devices' JSON answers in one round trip: KEYS are the hashes. Returns the found
# answers joined by commas (in KEYS order, ready to go between the brackets of a JSON array) and
# the 1-based positions of the keys with no answer. One HGET a device is the cheapest read a Lua
# script can do (~2 us); building 1,000 dicts in Python from separate fields took ~5 ms.
_GET_MANY_LUA = """
local found, missing = {}, {}
for i = 1, #KEYS do
  local answer = redis.call('HGET', KEYS[i], 'json')
  if answer then found[#found + 1] = answer else missing[#missing + 1] = i end
end
return {table.concat(found, ','), missing}
"""

# The API answer of one device, rendered from the values' reprs (ids hold nothing JSON escapes,
# and the reprs of finite floats are JSON numbers).
_ANSWER_TEMPLATE = {
    kind: "".join(['{"', ID_FIELD[kind], '":"%s"', *[f',"{name}":%s' for name in API_FIELDS[kind]],
                   ',"timestamp":"%s"}'])
    for kind in API_FIELDS
}


def _answer(reading: Reading, iso: str, values: list[str]) -> str:
    return _ANSWER_TEMPLATE[reading.kind] % (reading.device_id, *values, iso)


def render_answer(reading: Reading) -> str:
    """Return the JSON answer of a latest read for ``reading`` (what the ``json`` field holds)."""
    return _answer(reading, format_ts(reading.ts), [repr(v) for v in reading.values])


def _hash_args(reading: Reading, iso: str, values: list[str]) -> tuple[str, ...]:
    """Return the seven script arguments that describe ``reading``'s hash."""
    padded = values if len(values) == 3 else [*values, ""]
    return (reading.kind, str(epoch_micros(reading.ts)), iso, *padded, _answer(reading, iso, values))


class LatestStateStore:
    """Write readings to Redis (latest hashes + stream) and read the latest state back."""

    def __init__(self, client: redis.Redis, stream_key: str = STREAM_KEY, ttl_days: int = 30):
        self.client = client
        self.ttl_seconds = str(ttl_days * 86400)
        self.direct = DirectRedis(client)  # the hot path: one call per request
        self.stream_key = stream_key
        self.newest_keys = (newest_key(METER), newest_key(VEHICLE))
        self._ingest = client.register_script(_INGEST_LUA)
        self._refill = client.register_script(_REFILL_LUA)
        self._get_many = client.register_script(_GET_MANY_LUA)

    def append(self, readings: Sequence[Reading], counter: tuple[str, int, int] | None = None) -> int:
        """Store ``readings`` in one round trip; return how many the stream took.

        ``counter`` is the caller's rate limit (counter key, limit, window seconds): over it, nothing
        is stored and the answer is minus the seconds until the window ends.
        """
        if counter is None:
            keys = [self.stream_key, self.stream_key, *self.newest_keys]  # the second is unused with limit 0
            args: list[str] = ["0", "0"]
        else:
            keys = [self.stream_key, counter[0], *self.newest_keys]
            args = [str(counter[1]), str(counter[2])]
        for r in readings:
            # Hot path (every accepted reading): format the timestamp and values once. The row is
            # exactly Reading.copy_row().
            iso = format_ts(r.ts)
            values = [repr(v) for v in r.values]
            keys.append(latest_key(r.kind, r.device_id))
            args += _hash_args(r, iso, values)
            args.append("\t".join((r.device_id, iso, *values)))
            args.append(r.device_id)
        args.append(self.ttl_seconds)
        return int(self.direct.evalsha(self._ingest, keys, args))

    def refill(self, readings: Sequence[Reading]) -> int:
        """Move hashes forward to ``readings`` (never backwards) in one round trip; return how many moved."""
        if not readings:
            return 0
        keys: list[str] = []
        args: list[str] = []
        for r in readings:
            keys.append(latest_key(r.kind, r.device_id))
            args += _hash_args(r, format_ts(r.ts), [repr(v) for v in r.values])
        args.append(self.ttl_seconds)
        return int(self._refill(keys=keys, args=args))

    def get(self, kind: str, device_id: str) -> str | None:
        """Return a device's latest reading as its JSON answer, or None if Redis holds none."""
        return self.direct.execute("HGET", latest_key(kind, device_id), "json")

    def get_many(self, kind: str, device_ids: Sequence[str]) -> tuple[str, list[int]]:
        """Return the found devices' JSON answers joined by commas, and the indexes of the missing ones."""
        if not device_ids:
            return "", []
        joined, missing = self.direct.evalsha(self._get_many, [latest_key(kind, d) for d in device_ids], ())
        return joined, [int(i) - 1 for i in missing]

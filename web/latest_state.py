"""LatestStateStore: each device's newest reading in a Redis hash, plus the stream append."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from common.streams import API_FIELDS, ID_FIELD, STREAM_KEY, Reading, epoch_micros, format_ts, latest_key

# One atomic round trip per ingest request. For each reading, in order: move the device's hash
# forward only when the reading is strictly newer than what it holds (an older or equal one
# leaves it alone), then append the reading to the stream. KEYS[1] is the stream, KEYS[i+1]
# the hash of reading i; ARGV holds seven values per reading: kind, epoch micros, ISO timestamp,
# three values (the third empty for a meter) and the COPY row. Doing both in one script means an accepted reading is
# always in the stream: there is no state where Redis took one half and not the other.
_INGEST_LUA = """
local stream = KEYS[1]
local n = #KEYS - 1
for i = 1, n do
  local key = KEYS[i + 1]
  local a = (i - 1) * 7
  local kind = ARGV[a + 1]
  local ts = tonumber(ARGV[a + 2])
  local current = redis.call('HGET', key, '_ts')
  if (not current) or tonumber(current) < ts then
    if kind == 'm' then
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'kwhConsumedAc', ARGV[a + 4], 'voltage', ARGV[a + 5])
    else
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'soc', ARGV[a + 4], 'kwhDeliveredDc', ARGV[a + 5], 'batteryTemp', ARGV[a + 6])
    end
  end
  redis.call('XADD', stream, '*', 'k', kind, 'r', ARGV[a + 7])
end
return n
"""

# Refill hashes from Postgres (a read that missed, or a rebuild after Redis lost its data) with the
# same rule as ingest: a hash only moves forward in time, so a refill never overwrites a newer
# reading that arrived meanwhile. KEYS[i] is the hash of reading i; ARGV holds six values per
# reading: kind, epoch micros, ISO timestamp and three values (the third empty for a meter).
# Returns how many hashes moved.
_REFILL_LUA = """
local moved = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local a = (i - 1) * 6
  local ts = tonumber(ARGV[a + 2])
  local current = redis.call('HGET', key, '_ts')
  if (not current) or tonumber(current) < ts then
    if ARGV[a + 1] == 'm' then
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'kwhConsumedAc', ARGV[a + 4], 'voltage', ARGV[a + 5])
    else
      redis.call('HSET', key, '_ts', ARGV[a + 2], 'timestamp', ARGV[a + 3],
                 'soc', ARGV[a + 4], 'kwhDeliveredDc', ARGV[a + 5], 'batteryTemp', ARGV[a + 6])
    end
    moved = moved + 1
  end
end
return moved
"""

# Read many hashes in one command: KEYS are the hashes, ARGV the fields; returns, per hash, the
# field values in ARGV order (nil where absent). One script call is parsed by hiredis in C, where
# a pipeline of 1,000 HGETALLs costs redis-py ~10 us of Python per command.
_GET_MANY_LUA = """
local unpack = unpack or table.unpack
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
end
return out
"""


class LatestStateStore:
    """Write readings to Redis (latest hashes + stream) and read the latest state back."""

    def __init__(self, client: redis.Redis, stream_key: str = STREAM_KEY):
        self.client = client
        self.stream_key = stream_key
        self._ingest = client.register_script(_INGEST_LUA)
        self._refill = client.register_script(_REFILL_LUA)
        self._get_many = client.register_script(_GET_MANY_LUA)

    def append(self, readings: Sequence[Reading]) -> int:
        """Store ``readings`` in one round trip; return how many the stream took."""
        keys = [self.stream_key]
        args: list[str] = []
        for r in readings:
            # Hot path (every accepted reading): format the timestamp and values once. The row is
            # exactly Reading.copy_row().
            iso = format_ts(r.ts)
            values = [repr(v) for v in r.values]
            row = "\t".join((r.device_id, iso, *values))
            if len(values) == 2:
                values.append("")
            keys.append(latest_key(r.kind, r.device_id))
            args += (r.kind, str(epoch_micros(r.ts)), iso, *values, row)
        return int(self._ingest(keys=keys, args=args))

    def refill(self, readings: Sequence[Reading]) -> int:
        """Move hashes forward to ``readings`` (never backwards) in one round trip; return how many moved."""
        if not readings:
            return 0
        keys: list[str] = []
        args: list[str] = []
        for r in readings:
            keys.append(latest_key(r.kind, r.device_id))
            values = [repr(v) for v in r.values]
            values += [""] * (3 - len(values))
            args += [r.kind, str(epoch_micros(r.ts)), format_ts(r.ts), *values]
        return int(self._refill(keys=keys, args=args))

    def get(self, kind: str, device_id: str) -> dict | None:
        """Return a device's latest reading in API shape, or None if Redis holds none."""
        return self._to_api(kind, device_id, self.client.hgetall(latest_key(kind, device_id)))

    def get_many(self, kind: str, device_ids: Sequence[str]) -> dict[str, dict | None]:
        """Return the latest reading of each device (None where unknown), in one round trip."""
        if not device_ids:
            return {}
        id_field, values = ID_FIELD[kind], API_FIELDS[kind]
        rows = self._get_many(keys=[latest_key(kind, d) for d in device_ids], args=("timestamp", *values))
        found: dict[str, dict | None] = {}
        for device_id, row in zip(device_ids, rows, strict=True):
            if not row or row[0] is None:
                found[device_id] = None
                continue
            # The same shape as _to_api, built straight from the HMGET row (up to 1,000 a request).
            reading: dict = {id_field: device_id}
            reading.update(zip(values, map(float, row[1:]), strict=True))
            reading["timestamp"] = row[0]
            found[device_id] = reading
        return found

    @staticmethod
    def _to_api(kind: str, device_id: str, stored: dict) -> dict | None:
        if not stored or "timestamp" not in stored:
            return None
        out: dict = {ID_FIELD[kind]: device_id}
        for name in API_FIELDS[kind]:
            out[name] = float(stored[name])
        out["timestamp"] = stored["timestamp"]
        return out


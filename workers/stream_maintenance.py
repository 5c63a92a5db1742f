"""Keep the telemetry streams healthy: reclaim a dead consumer's entries, trim acknowledged ones (every shard).

Redis 7.0 has no XACKDEL nor ACKED trimming, and ``XTRIM MAXLEN ~`` could drop entries that were
delivered but not yet acknowledged. So the trim works by MINID: everything below the oldest
pending entry of every consumer group (or, when nothing is pending, everything up to the group's
last-delivered id) has been acknowledged and may go. Both the bound and the trim are computed in
one Lua script, so no read or acknowledgement can slip in between.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import redis

from common import metrics
from common.settings import Settings
from common.streams import CONSUMER_GROUP, SINGLE, STREAM_KEY, KeySpace
from workers.drain import PostgresUnavailableError, StreamDrainer

log = logging.getLogger(__name__)

RECLAIM_CONSUMER = "reclaimer"
# A consumer with nothing pending and no read for this long belongs to a worker that is gone.
IDLE_CONSUMER_MS = 3600 * 1000
# Most entries evicted per XTRIM call (each call blocks Redis for a few ms at most); the job calls
# again until nothing is left to evict.
TRIM_LIMIT = 100_000
_MAX_TRIM_CALLS = 50

# KEYS[1]: the stream. ARGV[1]: "1" for approximate trimming (whole macro nodes, cheap), "0" for
# exact. ARGV[2]: most entries to evict in this call (approximate only). Returns {evicted, minid}.
_TRIM_LUA = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq), ms
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, ''} end  -- no consumer group: nothing is known to be done
local minid = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local keep
  if tonumber(info['pending']) > 0 then
    keep = redis.call('XPENDING', KEYS[1], info['name'])[2]  -- the group's oldest pending id
  else
    local _, seq, ms = parse(info['last-delivered-id'])
    keep = ms .. '-' .. string.format('%d', seq + 1)  -- everything delivered is acknowledged
  end
  if minid == nil or less(keep, minid) then minid = keep end
end
local evicted
if ARGV[1] == '1' then
  evicted = redis.call('XTRIM', KEYS[1], 'MINID', '~', minid, 'LIMIT', tonumber(ARGV[2]))
else
  evicted = redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
return {evicted, minid}
"""

# KEYS[1]: the stream; ARGV[1]: the group; ARGV[2]: idle ms. Deletes consumers that have nothing
# pending and have been idle that long, checked and deleted atomically (XGROUP DELCONSUMER would
# drop a consumer's pending entries, so a consumer that read something meanwhile is kept).
_FORGET_IDLE_CONSUMERS_LUA = """
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(removed, info['name'])
  end
end
return removed
"""


def trim_stream(
    client: redis.Redis, stream_key: str = STREAM_KEY, approximate: bool = True, limit: int = TRIM_LIMIT
) -> dict:
    """Remove acknowledged entries from the stream, never a pending or undelivered one."""
    script = client.register_script(_TRIM_LUA)
    evicted_total, minid = 0, ""
    for _ in range(_MAX_TRIM_CALLS):
        evicted, minid = script(keys=[stream_key], args=["1" if approximate else "0", limit])
        evicted = int(evicted)
        minid = minid.decode() if isinstance(minid, bytes) else minid
        evicted_total += evicted
        # Approximate trimming evicts whole nodes only, so a call may evict a little under the limit
        # with more to go: call again until a call evicts nothing.
        if not approximate or evicted == 0:
            break
    if evicted_total:
        metrics.incr(client, "stream_trimmed_entries", evicted_total)
    result = {"evicted": evicted_total, "min_id": minid or None}
    # An empty trim (the usual case, every few seconds) is routine: DEBUG.
    log.log(logging.INFO if evicted_total else logging.DEBUG, "stream trimmed", extra=result)
    return result


def trim_streams(client: redis.Redis, keys: KeySpace = SINGLE, approximate: bool = True) -> dict:
    """Trim every shard's stream; return the entries evicted in all and each shard's bound."""
    results = [trim_stream(client, stream, approximate=approximate) for stream in keys.all_streams()]
    return {"evicted": sum(r["evicted"] for r in results), "min_ids": [r["min_id"] for r in results]}


def forget_idle_consumers(
    client: redis.Redis, stream_key: str = STREAM_KEY, group: str = CONSUMER_GROUP, idle_ms: int = IDLE_CONSUMER_MS
) -> list[str]:
    """Delete consumers that hold nothing and have not read for ``idle_ms`` (workers that are gone)."""
    try:
        removed = client.register_script(_FORGET_IDLE_CONSUMERS_LUA)(keys=[stream_key], args=[group, idle_ms])
    except redis.ResponseError as exc:
        if "no such key" in str(exc) or "NOGROUP" in str(exc):
            return []
        raise
    return [r.decode() if isinstance(r, bytes) else r for r in removed]


def reclaim_stale_entries(settings: Settings, client: redis.Redis, seconds: float = 60.0) -> dict:
    """Write and acknowledge entries pending longer than RECLAIM_IDLE_SECONDS (a dead consumer's work).

    Drains also reclaim such entries as they go; this catches them even when every drain is busy
    or none runs. An entry that keeps failing goes to the dead-letter stream as in the drain.
    """
    keys = KeySpace.for_settings(settings)
    drainer = StreamDrainer(settings, client, RECLAIM_CONSUMER, keys=keys)
    deadline = time.monotonic() + seconds
    stopped_by = None
    try:
        for shard in range(keys.shards):
            while time.monotonic() < deadline and stopped_by is None:
                try:
                    entries = drainer.reclaim(shard)
                except redis.ResponseError as exc:
                    if "NOGROUP" in str(exc) or "no such key" in str(exc):
                        break
                    raise
                if not entries:
                    break
                try:
                    committed = drainer.write(entries, shard)
                except PostgresUnavailableError as exc:
                    # The entries stay pending under this consumer and are claimed again once idle.
                    stopped_by = str(exc).strip()
                    break
                drainer.ack(committed, redelivered=True, shard=shard)
    finally:
        drainer.close()
    removed = [name for stream in keys.all_streams() for name in forget_idle_consumers(client, stream)]
    result = {**asdict(drainer.totals), "idle_consumers_removed": removed, "stopped_by": stopped_by}
    worked = drainer.totals.entries_acked or removed or stopped_by
    log.log(logging.INFO if worked else logging.DEBUG, "reclaim done", extra=result)
    return result

"""LatestStateStore: each device's newest reading in a Redis hash, plus the stream append, per shard.

On a single Redis one ingest request is one script call covering every shard it touches (atomic,
one round trip). On a Redis Cluster each shard's part is one script call on the node that holds
the shard's slot, pipelined per node (one round trip per node); a request spread over several
nodes can then be taken in part when a node fails. With REDIS_MIN_REPLICAS_ACK, a ``WAIT`` on the
same connection follows the script: a write the replicas did not confirm is not called accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis
from redis.exceptions import NoScriptError, ResponseError

from common.redis_clients import is_cluster
from common.streams import (
    API_FIELDS,
    GET_MANY_LUA,
    ID_FIELD,
    INGEST_LUA,
    KINDS,
    METER,
    REFILL_LUA,
    SINGLE,
    KeySpace,
    Reading,
    epoch_micros,
    format_ts,
)
from web.redis_direct import DirectRedis

log = logging.getLogger(__name__)

# Answers of a cluster node that mean "this command did not run here; ask the cluster again".
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")
_CLUSTER_ATTEMPTS = 3


class NotStoredError(Exception):
    """Redis did not take (or its replicas did not confirm) a request's readings.

    ``maybe_partly`` tells whether some of them may have been taken anyway (another shard's node
    took its part, or the master took a write its replicas did not confirm): resending is harmless.
    """

    def __init__(self, reason: str, message: str, maybe_partly: bool):
        super().__init__(message)
        self.reason = reason
        self.maybe_partly = maybe_partly


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


def _reading_args(reading: Reading, iso: str, values: list[str]) -> tuple[str, ...]:
    """Return the script arguments that describe ``reading``'s hash (common/streams.py)."""
    return reading.kind, str(epoch_micros(reading.ts)), _answer(reading, iso, values), reading.device_id


class _ShardGroup:
    """The keys and arguments of one shard's part of an ingest request."""

    __slots__ = ("args", "keys", "meters", "vehicles")

    def __init__(self, head: list[str]):
        # The shard's stream and newest-reading sets (see _shard_heads), then a hash a reading (INGEST_LUA).
        self.keys = list(head)
        self.args: list[str] = []
        self.meters: list[str] = []
        self.vehicles: list[str] = []

    def add(self, key: str, reading: Reading) -> None:
        # Hot path (every accepted reading): format the timestamp and values once; the row is
        # exactly Reading.copy_row().
        iso = format_ts(reading.ts)
        values = [repr(v) for v in reading.values]
        self.keys.append(key)
        self.args += _reading_args(reading, iso, values)
        (self.meters if reading.kind == METER else self.vehicles).append("\t".join((reading.device_id, iso, *values)))

    def script_args(self) -> list[str]:
        return [str(len(self.keys) - 1 - len(KINDS)), "\n".join(self.meters), "\n".join(self.vehicles), *self.args]


class LatestStateStore:
    """Write readings to Redis (latest hashes + stream entries) and read the latest state back."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySpace = SINGLE,
        ttl_days: int = 30,
        counter_client: redis.Redis | None = None,
        min_replicas_ack: int = 0,
        wait_timeout_ms: int = 500,
    ):
        self.client = client
        self.keys = keys
        # Each shard's fixed leading KEYS of an ingest group: its stream, then its newest-reading sets in KINDS order.
        self._shard_heads = [[keys.stream(shard), *(keys.newest(kind, shard) for kind in KINDS)]
                             for shard in range(keys.shards)]
        self.cluster = is_cluster(client)
        if self.cluster and not keys.tagged:
            raise ValueError("a Redis Cluster needs hash-tagged keys (KeySpace(tagged=True))")
        self.ttl_seconds = str(ttl_days * 86400)
        self.min_replicas_ack = min_replicas_ack
        self.wait_timeout_ms = wait_timeout_ms
        # The hot path: one call per request. On a cluster, the rate-limit counter lives on the
        # plain Redis (REDIS_URL, where Flask-Limiter keeps it) and is checked there first.
        self.direct = None if self.cluster else DirectRedis(client)
        self.counter_direct = DirectRedis(counter_client) if counter_client is not None else self.direct
        self._ingest = client.register_script(INGEST_LUA)
        self._refill = client.register_script(REFILL_LUA)
        self._get_many = client.register_script(GET_MANY_LUA)
        self._counter_script = (counter_client or client).register_script(INGEST_LUA) if self.cluster else None

    # -- ingest -------------------------------------------------------------------------------

    def _groups(self, readings: Sequence[Reading]) -> list[_ShardGroup]:
        keys = self.keys
        if keys.shards == 1:
            group = _ShardGroup(self._shard_heads[0])
            for r in readings:
                group.add(keys.latest(r.kind, r.device_id, 0), r)
            return [group]
        groups: dict[int, _ShardGroup] = {}
        for r in readings:
            shard = keys.shard_of(r.kind, r.device_id)
            group = groups.get(shard)
            if group is None:
                group = groups[shard] = _ShardGroup(self._shard_heads[shard])
            group.add(keys.latest(r.kind, r.device_id, shard), r)
        return list(groups.values())

    def append(self, readings: Sequence[Reading], counter: tuple[str, int, int] | None = None) -> int:
        """Store ``readings`` (one stream entry per shard); return how many the streams took.

        ``counter`` is the caller's rate limit (counter key, limit, window seconds): over it, nothing
        is stored and the answer is minus the seconds until the window ends. Raises
        ``NotStoredError`` when Redis (or, with REDIS_MIN_REPLICAS_ACK, its replicas) did not take them.
        """
        groups = self._groups(readings)
        if self.cluster:
            if counter is not None:
                over = self._check_counter(counter)
                if over < 0:
                    return over
            return self._cluster_append(groups)
        keys = [counter[0] if counter else groups[0].keys[0]]  # the counter is unused with limit 0
        args = [str(counter[1]), str(counter[2])] if counter else ["0", "0"]
        args += (self.ttl_seconds, str(len(groups)))
        for group in groups:
            keys += group.keys
            args += group.script_args()
        if not self.min_replicas_ack:
            return int(self.direct.evalsha(self._ingest, keys, args))
        try:
            taken, acked = self.direct.evalsha_then_wait(self._ingest, keys, args, self.min_replicas_ack,
                                                         self.wait_timeout_ms)
        except redis.ConnectionError as exc:
            # The script may have run before the connection broke, and no replica confirmed it.
            raise NotStoredError("redis_unavailable", str(exc), maybe_partly=True) from exc
        taken = int(taken)
        if taken >= 0 and acked < self.min_replicas_ack:
            raise self._unconfirmed(acked)
        return taken

    def _unconfirmed(self, acked: int) -> NotStoredError:
        return NotStoredError(
            "replicas_unconfirmed",
            f"{acked} of the {self.min_replicas_ack} replicas required (REDIS_MIN_REPLICAS_ACK) confirmed the "
            f"write within {self.wait_timeout_ms} ms",
            maybe_partly=True,
        )

    def _check_counter(self, counter: tuple[str, int, int]) -> int:
        """Count the request against its rate limit on the plain Redis; negative: over it (seconds to wait)."""
        key, limit, window = counter
        args = [str(limit), str(window), self.ttl_seconds, "0"]
        if self.counter_direct is None:
            return int(self._counter_script(keys=[key], args=args))
        return int(self.counter_direct.evalsha(self._counter_script, [key], args))

    def _cluster_append(self, groups: list[_ShardGroup]) -> int:
        """Send each shard's script to the node holding its slot, one pipeline per node (then WAIT)."""
        pending = groups
        taken = 0
        stored_some = False
        failure: Exception | None = None
        for _attempt in range(_CLUSTER_ATTEMPTS):
            by_node: dict[str, tuple[object, list[_ShardGroup]]] = {}
            for group in pending:
                node = self.client.get_node_from_key(group.keys[0])
                by_node.setdefault(node.name, (node, []))[1].append(group)
            retry: list[_ShardGroup] = []
            for node, node_groups in by_node.values():
                try:
                    done, again, unconfirmed = self._append_on_node(node, node_groups)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    failure = exc
                    stored_some = True  # a broken connection leaves unknown whether the scripts ran
                    retry += node_groups
                    continue
                taken += done
                stored_some = stored_some or done > 0
                retry += again
                if unconfirmed is not None:
                    failure = self._unconfirmed(unconfirmed)
            if isinstance(failure, NotStoredError):
                raise failure
            if not retry:
                return taken
            pending = retry
            self.client.nodes_manager.initialize()  # the slots may have moved (a failover): ask again
        reason = "redis_unavailable"
        raise NotStoredError(reason, f"{len(pending)} shard(s) could not be written: {failure}",
                             maybe_partly=stored_some or len(pending) < len(groups))

    def _append_on_node(self, node, groups: list[_ShardGroup]) -> tuple[int, list[_ShardGroup], int | None]:
        """Run ``groups`` on ``node`` in one pipeline; return (taken, groups to retry, replicas acked if too few)."""
        connection = self.client.get_redis_connection(node)
        header = ["0", "0", self.ttl_seconds, "1"]
        todo, answered = groups, []
        acked = None
        for load_first in (False, True):
            if load_first:
                # A promoted replica has no scripts (they are not replicated): load, and send those again.
                connection.script_load(self._ingest.script)
            pipe = connection.pipeline(transaction=False)
            for group in todo:
                # KEYS[1], the rate-limit counter, is unused here (limit 0): the stream stands in for it.
                pipe.execute_command("EVALSHA", self._ingest.sha, len(group.keys) + 1, group.keys[0], *group.keys,
                                     *header, *group.script_args())
            if self.min_replicas_ack:
                # WAIT counts this connection's writes so far: every script sent on it, both passes.
                pipe.execute_command("WAIT", self.min_replicas_ack, self.wait_timeout_ms)
            replies = pipe.execute(raise_on_error=False)
            if self.min_replicas_ack:
                acked = replies.pop()
            again = [g for g, reply in zip(todo, replies, strict=True) if isinstance(reply, NoScriptError)]
            answered += [(g, reply) for g, reply in zip(todo, replies, strict=True)
                         if not isinstance(reply, NoScriptError)]
            if not again:
                break
            todo = again
        taken, retry = 0, list(todo) if again else []
        for group, reply in answered:
            if isinstance(reply, ResponseError):
                if str(reply).split(" ", 1)[0] in _REDIRECTS:
                    retry.append(group)
                    continue
                # NOREPLICAS (min-replicas-to-write), OOM...: this node refuses; others may have taken theirs.
                raise NotStoredError("redis_unavailable", str(reply), maybe_partly=True)
            taken += int(reply)
        unconfirmed = None
        if self.min_replicas_ack:
            if isinstance(acked, Exception):
                raise acked
            if taken and int(acked) < self.min_replicas_ack:
                unconfirmed = int(acked)
        return taken, retry, unconfirmed

    # -- refill and reads ---------------------------------------------------------------------

    def _by_shard(self, kind_ids: Sequence[tuple[str, str]]) -> dict[int, list[int]]:
        """Return the positions of ``(kind, id)`` pairs grouped by shard."""
        shards: dict[int, list[int]] = {}
        for i, (kind, device_id) in enumerate(kind_ids):
            shards.setdefault(self.keys.shard_of(kind, device_id), []).append(i)
        return shards

    def _run_per_slot(self, script, calls: list[tuple[list[str], list[str]]]) -> list:
        """Run ``script`` once per (keys, args) on a cluster, pipelined; load it where a node lacks it."""
        for load_first in (False, True):
            if load_first:
                self.client.script_load(script.script)  # every primary
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                # Cluster pipelines refuse pipe.evalsha; EVALSHA as a plain command routes by its first key.
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            if not any(isinstance(reply, NoScriptError) for reply in replies):
                break
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def refill(self, readings: Sequence[Reading]) -> int:
        """Move hashes forward to ``readings`` (never backwards), one call per shard; return how many moved."""
        if not readings:
            return 0
        groups = (self._by_shard([(r.kind, r.device_id) for r in readings]) if self.cluster
                  else {0: range(len(readings))})
        calls = []
        for positions in groups.values():
            keys: list[str] = []
            args: list[str] = [self.ttl_seconds]
            for i in positions:
                r = readings[i]
                shard = self.keys.shard_of(r.kind, r.device_id)
                keys += (self.keys.latest(r.kind, r.device_id, shard), self.keys.newest(r.kind, shard))
                args += _reading_args(r, format_ts(r.ts), [repr(v) for v in r.values])
            calls.append((keys, args))
        if not self.cluster:
            return int(self._refill(keys=calls[0][0], args=calls[0][1]))
        return sum(int(moved) for moved in self._run_per_slot(self._refill, calls))

    def get(self, kind: str, device_id: str) -> str | None:
        """Return a device's latest reading as its JSON answer, or None if Redis holds none."""
        if self.cluster:
            return self.client.hget(self.keys.latest(kind, device_id), "json")
        return self.direct.execute("HGET", self.keys.latest(kind, device_id), "json")

    def get_many(self, kind: str, device_ids: Sequence[str]) -> tuple[str, list[int]]:
        """Return the found devices' JSON answers joined by commas, and the indexes of the missing ones."""
        if not device_ids:
            return "", []
        if not self.cluster:
            joined, missing = self.direct.evalsha(self._get_many, [self.keys.latest(kind, d) for d in device_ids], ())
            return joined, [int(i) - 1 for i in missing]
        groups = self._by_shard([(kind, d) for d in device_ids])
        calls = [([self.keys.latest(kind, device_ids[i]) for i in positions], []) for positions in groups.values()]
        answers: list[str | None] = [None] * len(device_ids)
        for positions, (joined, missing) in zip(groups.values(), self._run_per_slot(self._get_many, calls),
                                                strict=True):
            missing_here = {int(i) - 1 for i in missing}
            found = iter(_split_answers(joined))
            for j, position in enumerate(positions):
                if j not in missing_here:
                    answers[position] = next(found)
        found_all = [a for a in answers if a is not None]
        return ",".join(found_all), [i for i, a in enumerate(answers) if a is None]


def _split_answers(joined: str) -> list[str]:
    """Split answers joined by commas: each is one flat JSON object, so ``},{`` only occurs between two."""
    if not joined:
        return []
    parts = joined.split("},{")
    return [("" if i == 0 else "{") + part + ("" if i == len(parts) - 1 else "}") for i, part in enumerate(parts)]

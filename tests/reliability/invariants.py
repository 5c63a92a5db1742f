"""Read back what the engine stored (Postgres history and latest, Redis latest) and compare it with what was sent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import redis

from common.streams import API_FIELDS, CONSUMER_GROUP, KIND_NAMES, METER, SINGLE, VEHICLE, KeySpace, epoch_micros
from tests.reliability.datasets import reading_key, reading_values

Key = tuple[str, str, datetime]

_HISTORY_SQL = {
    METER: "SELECT meter_id, ts, kwh_consumed_ac, voltage FROM meter_readings",
    VEHICLE: "SELECT vehicle_id, ts, soc, kwh_delivered_dc, battery_temp FROM vehicle_readings",
}
_LATEST_SQL = {
    METER: "SELECT meter_id, ts, kwh_consumed_ac, voltage FROM meter_latest ORDER BY 1",
    VEHICLE: "SELECT vehicle_id, ts, soc, kwh_delivered_dc, battery_temp FROM vehicle_latest ORDER BY 1",
}
_DUPLICATES_SQL = {
    METER: "SELECT count(*) - count(DISTINCT (meter_id, ts)) FROM meter_readings",
    VEHICLE: "SELECT count(*) - count(DISTINCT (vehicle_id, ts)) FROM vehicle_readings",
}


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def history(conn: psycopg.Connection) -> dict[Key, tuple[float, ...]]:
    """Return every stored history row by (kind, device, ts)."""
    rows: dict[Key, tuple[float, ...]] = {}
    for kind, query in _HISTORY_SQL.items():
        for device_id, ts, *values in conn.execute(query):
            rows[(kind, device_id, _utc(ts))] = tuple(values)
    return rows


def history_count(conn: psycopg.Connection) -> int:
    """Return how many rows both history tables hold."""
    return sum(conn.execute(f"SELECT count(*) FROM ({q}) h").fetchone()[0] for q in _HISTORY_SQL.values())


def duplicates_stored(conn: psycopg.Connection) -> int:
    """Return how many history rows repeat a (device, ts) already stored."""
    return sum(conn.execute(q).fetchone()[0] for q in _DUPLICATES_SQL.values())


def postgres_latest(conn: psycopg.Connection) -> dict[tuple[str, str], tuple]:
    """Return the *_latest tables as {(kind, device): (ts, values...)}."""
    out = {}
    for kind, query in _LATEST_SQL.items():
        for device_id, ts, *values in conn.execute(query):
            out[(kind, device_id)] = (_utc(ts), *values)
    return out


def latest_keys(client: redis.Redis, keys: KeySpace = SINGLE) -> dict[str, tuple[str, str]]:
    """Return every latest-state hash's key in Redis, with the (kind, device) it is named after."""
    out = {}
    for key in client.scan_iter("latest:*", count=1000):
        for kind, name in KIND_NAMES.items():
            device = key.split(f":{name}:", 1)[1] if f":{name}:" in key else None
            if device is not None and keys.latest(kind, device) == key:
                out[key] = (kind, device)
    return out


def redis_latest(client: redis.Redis, keys: KeySpace = SINGLE) -> dict[tuple[str, str], tuple]:
    """Return every latest-state hash in Redis as {(kind, device): (ts, values...)}."""
    named = latest_keys(client, keys)
    pipe = client.pipeline(transaction=False)
    for key in named:
        pipe.hgetall(key)
    out = {}
    for (kind, device), stored in zip(named.values(), pipe.execute(), strict=True):
        if "json" in stored:
            # Reads serve the rendered answer (the json field); _ts is what ingest compares: both must agree.
            answer = json.loads(stored["json"])
            ts = _utc(datetime.fromisoformat(answer["timestamp"]))
            served = (ts, *(float(answer[f]) for f in API_FIELDS[kind]))
            out[(kind, device)] = served if int(stored["_ts"]) == epoch_micros(ts) else ("_ts disagrees", served)
    return out


def redis_latest_raw(client: redis.Redis) -> dict[str, dict]:
    """Return every latest-state hash exactly as Redis holds it."""
    keys = sorted(client.scan_iter("latest:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return dict(zip(keys, pipe.execute(), strict=True))


def stream_leftovers(client: redis.Redis, keys: KeySpace = SINGLE) -> tuple[int, int]:
    """Return (entries pending in the consumer groups, readings in the dead-letter streams), every shard."""
    pending = dead = 0
    for shard in range(keys.shards):
        if client.exists(keys.stream(shard)):
            pending += int(client.xpending(keys.stream(shard), CONSUMER_GROUP)["pending"])
        dead += int(client.xlen(keys.dead_letters(shard)))
    return pending, dead


@dataclass
class Expected:
    """What the client was told: the readings answered 202 and those answered 4xx."""

    acknowledged: dict[Key, tuple[float, ...]] = field(default_factory=dict)
    rejected: set[Key] = field(default_factory=set)
    readings_sent: int = 0
    readings_acknowledged: int = 0

    def add(self, body, status: int) -> None:
        items = body if isinstance(body, list) else [body]
        self.readings_sent += len(items)
        if status == 202:
            self.readings_acknowledged += len(items)
            for item in items:
                self.acknowledged[reading_key(item)] = tuple(float(v) for v in reading_values(item))
        elif 400 <= status < 500:
            for item in items:
                if isinstance(item, dict) and ("meterId" in item or "vehicleId" in item):
                    try:
                        self.rejected.add(reading_key(item))
                    except (KeyError, TypeError, ValueError):
                        continue  # the bad item itself may have no usable key

    def newest(self) -> dict[tuple[str, str], tuple]:
        """Return each device's newest acknowledged reading as (ts, values...)."""
        out: dict[tuple[str, str], tuple] = {}
        for (kind, device_id, ts), values in self.acknowledged.items():
            current = out.get((kind, device_id))
            if current is None or ts > current[0]:
                out[(kind, device_id)] = (ts, *values)
        return out


@dataclass
class Comparison:
    """The outcome of comparing stored history with what was acknowledged."""

    stored: int
    lost: list[Key]
    wrong_values: list[Key]
    rejected_but_stored: list[Key]
    unexpected: list[Key]


def compare_history(expected: Expected, stored: dict[Key, tuple[float, ...]]) -> Comparison:
    """Find acknowledged readings missing or altered in history, and rows nobody was told were accepted."""
    lost = [k for k in expected.acknowledged if k not in stored]
    wrong = [k for k, v in expected.acknowledged.items() if k in stored and stored[k] != v]
    rejected = [k for k in expected.rejected if k in stored and k not in expected.acknowledged]
    unexpected = [k for k in stored if k not in expected.acknowledged]
    return Comparison(len(stored), lost, wrong, rejected, unexpected)


def latest_mismatches(expected: dict[tuple[str, str], tuple], actual: dict[tuple[str, str], tuple]) -> list:
    """Return the devices whose latest state is not their newest acknowledged reading (or that should have none)."""
    devices = set(expected) | set(actual)
    return sorted((d, expected.get(d), actual.get(d)) for d in devices if expected.get(d) != actual.get(d))

"""Deterministic data sets: the chaos run's request plan and the replay data set.

A reading is an API-shaped dict. ``reading_key`` names it the way the history table does:
(kind, device id, UTC timestamp). Values are rounded decimals, so they survive JSON, the stream's
COPY text and ``double precision`` unchanged and can be compared exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from common.streams import METER, VEHICLE

MINUTE = timedelta(minutes=1)
_PLUS_TWO = timezone(timedelta(hours=2))


def reading_key(item: dict) -> tuple[str, str, datetime]:
    """Return (kind, device id, UTC timestamp) of an API reading."""
    ts = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00")).astimezone(UTC)
    if "meterId" in item:
        return METER, item["meterId"], ts
    return VEHICLE, item["vehicleId"], ts


def reading_values(item: dict) -> tuple[float, ...]:
    """Return the value columns of an API reading in history-table order."""
    if "meterId" in item:
        return (item["kwhConsumedAc"], item["voltage"])
    return (item["soc"], item["kwhDeliveredDc"], item["batteryTemp"])


def _format(ts: datetime, rng: random.Random) -> str:
    """Format a timestamp the way a varied fleet would: mostly Z, some with another offset."""
    if rng.random() < 0.1:
        return ts.astimezone(UTC).astimezone(_PLUS_TWO).isoformat()
    text = ts.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z") if rng.random() < 0.7 else text


@dataclass
class DeviceSeries:
    """Readings of one device, oldest first."""

    kind: str
    device_id: str
    readings: list[dict] = field(default_factory=list)


def device_series(kind: str, device_id: str, newest: datetime, count: int, rng: random.Random,
                  reset_probability: float = 0.0) -> DeviceSeries:
    """Return ``count`` readings one minute apart ending at ``newest`` (counter resets now and then)."""
    series = DeviceSeries(kind, device_id)
    counter = round(rng.uniform(0, 5000), 3)
    millis = rng.random() < 0.3
    for j in range(count):
        ts = newest - (count - 1 - j) * MINUTE
        if millis:
            ts += timedelta(milliseconds=rng.randrange(1000))
        if rng.random() < reset_probability:
            counter = round(rng.uniform(0, 2), 3)  # a counter reset: the value drops
        else:
            counter = round(counter + rng.uniform(0, 0.4), 3)
        if kind == METER:
            item = {"meterId": device_id, "kwhConsumedAc": counter, "voltage": round(rng.uniform(215, 245), 1)}
        else:
            item = {"vehicleId": device_id, "soc": round(rng.uniform(5, 95), 2), "kwhDeliveredDc": counter,
                    "batteryTemp": round(rng.uniform(10, 42), 1)}
        item["timestamp"] = _format(ts, rng)
        series.readings.append(item)
    return series


# -- the chaos run ----------------------------------------------------------------------------


@dataclass
class ChaosPlan:
    """The requests of the chaos run, in sending order, and what each one is."""

    requests: list[dict]  # {"i", "body", "role": "valid" | "resend" | "invalid"}
    valid_readings: int
    devices: list[tuple[str, str]]

    def lines(self) -> list[dict]:
        return [{"i": r["i"], "body": r["body"]} for r in self.requests]


def chaos_plan(now: datetime, seed: int = 5, meters: int = 150, vehicles: int = 150,
               per_device: int = 170) -> ChaosPlan:
    """Build the chaos run's requests: singles and batches, late devices, resent batches and rejected ones.

    - readings go out roughly in time order, except for one device in five whose readings are
      shuffled within windows of a dozen (a device that sends late);
    - three requests in four are a single reading (an object), the rest arrays of 1 to 250 readings;
    - one batch in 25 is sent twice, the second time a little later;
    - one request in 40 is rejected by design and must leave no trace: a batch of readings of
      ``rej-*`` devices with one bad item, a single bad reading, or a batch holding readings
      of real devices newer than anything they ever send (so a partial write would move their
      latest state) plus one bad item.
    """
    rng = random.Random(seed)
    newest = now.replace(microsecond=0) - timedelta(minutes=1)
    series = [device_series(METER, f"cm-{n:03d}", newest - timedelta(seconds=rng.randrange(60)), per_device, rng)
              for n in range(meters)]
    series += [device_series(VEHICLE, f"cv-{n:03d}", newest - timedelta(seconds=rng.randrange(60)), per_device, rng)
               for n in range(vehicles)]
    ordered: list[tuple[float, int, dict]] = []
    for number, s in enumerate(series):
        slots = [reading_key(r)[2].timestamp() for r in s.readings]
        readings = list(s.readings)
        if rng.random() < 0.2:  # a late device: its readings arrive shuffled in windows of 12
            for start in range(0, len(readings), 12):
                window = readings[start:start + 12]
                rng.shuffle(window)
                readings[start:start + 12] = window
        ordered += [(slot, number, r) for slot, r in zip(slots, readings, strict=True)]
    ordered.sort(key=lambda t: (t[0], t[1]))
    items = [r for _, _, r in ordered]

    bodies: list[tuple[str, object]] = []
    position = 0
    while position < len(items):
        if rng.random() < 0.75:
            bodies.append(("valid", items[position]))
            position += 1
        else:
            size = rng.randint(1, 250)
            bodies.append(("valid", items[position:position + size]))
            position += size
    with_extras: list[tuple[str, object]] = []
    resends: dict[int, list[object]] = {}
    for n, (role, body) in enumerate(bodies):
        with_extras.append((role, body))
        for body_again in resends.pop(n, []):
            with_extras.append(("resend", body_again))
        if isinstance(body, list) and rng.random() < 1 / 25:
            resends.setdefault(n + rng.randint(1, 30), []).append(body)
        if rng.random() < 1 / 40:
            with_extras.append(("invalid", _rejected_body(rng, len(with_extras), series, now)))
    for late in resends.values():
        with_extras += [("resend", body) for body in late]
    requests = [{"i": i, "body": body, "role": role} for i, (role, body) in enumerate(with_extras)]
    return ChaosPlan(requests, len(items), [(s.kind, s.device_id) for s in series])


def _rejected_body(rng: random.Random, n: int, series: list[DeviceSeries], now: datetime) -> object:
    """Return a request body that must be rejected as a whole (400)."""
    ts = now.replace(microsecond=0) - timedelta(seconds=rng.randrange(5, 50))
    bad = {"vehicleId": f"rej-v-{n}", "soc": 150.0, "kwhDeliveredDc": 1.0, "batteryTemp": 20.0,
           "timestamp": ts.isoformat()}
    choice = rng.randrange(3)
    if choice == 0:
        good = [{"meterId": f"rej-m-{n}-{k}", "kwhConsumedAc": 1.0 + k, "voltage": 230.0,
                 "timestamp": (ts - k * MINUTE).isoformat()} for k in range(rng.randint(1, 50))]
        good.insert(rng.randrange(len(good) + 1), bad)
        return good
    if choice == 1:
        return {"meterId": f"rej-m-{n}", "kwhConsumedAc": "12.5", "voltage": 230.0, "timestamp": ts.isoformat()}
    # Real devices, newer than anything they send (their newest is a minute ago at most).
    good = []
    for s in rng.sample(series, 5):
        item = dict(s.readings[-1])
        item["timestamp"] = ts.isoformat()
        good.append(item)
    good.insert(rng.randrange(len(good) + 1), bad)
    return good


# -- replay equivalence ---------------------------------------------------------------------------


@dataclass
class ReplayDataset:
    """The replay data set: readings, mappings (vehicle -> meter) and the analytics questions to ask."""

    readings: list[dict]
    mappings: list[tuple[str, str]]
    analytics_queries: list[str]


def replay_dataset(now: datetime, seed: int = 55, meters: int = 100, vehicles: int = 100,
                   per_device: int = 500) -> ReplayDataset:
    """Build ``(meters + vehicles) * per_device`` readings with counter resets, and the mappings."""
    rng = random.Random(seed)
    newest = now.replace(microsecond=0) - timedelta(minutes=2)
    readings: list[dict] = []
    for n in range(meters):
        readings += device_series(METER, f"rm-{n:03d}", newest, per_device, rng, reset_probability=0.004).readings
    for n in range(vehicles):
        readings += device_series(VEHICLE, f"rv-{n:03d}", newest, per_device, rng, reset_probability=0.004).readings
    # Some meters feed two vehicles; the last ten meters feed none.
    mappings = [(f"rv-{n:03d}", f"rm-{n % (meters - 10):03d}") for n in range(vehicles)]
    to_all = (newest + MINUTE).isoformat()
    to_middle = (newest - (per_device // 2) * MINUTE).isoformat()
    queries = []
    for vehicle_id, _ in mappings:
        queries.append(f"/v1/analytics/performance/{vehicle_id}?hours=24&to={_q(to_all)}")
        queries.append(f"/v1/analytics/performance/{vehicle_id}?hours=2&to={_q(to_middle)}")
    return ReplayDataset(readings, mappings, queries)


def _q(text: str) -> str:
    return text.replace("+", "%2B").replace(":", "%3A")


def time_ordered(readings: list[dict]) -> list[dict]:
    """Return the readings in time order (ties by device)."""
    return sorted(readings, key=lambda r: (reading_key(r)[2], reading_key(r)[1]))


def shuffled_with_duplicates(readings: list[dict], fraction: float = 0.1, seed: int = 56) -> list[dict]:
    """Return the readings shuffled, with ``fraction`` of them sent a second time at random places."""
    rng = random.Random(seed)
    out = list(readings) + rng.sample(readings, int(len(readings) * fraction))
    rng.shuffle(out)
    return out


def batches(readings: list[dict], size: int) -> list[list[dict]]:
    """Cut readings into request bodies of at most ``size``."""
    return [readings[i:i + size] for i in range(0, len(readings), size)]

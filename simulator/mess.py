"""The real world's mess on top of the charging model: resets, glitches, silence, late, duplicated and skewed readings.

Every kind of mess happens at a low rate and is recorded in ``Simulation.events``, so a test (or a
person) can tell the scripted mess from a bug.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from simulator.model import ChargingModel, FleetConfig, iso, meter_id, vehicle_id

RESET, GLITCH, SILENT, LATE, DUPLICATE, SKEW = "reset", "glitch", "silent", "late", "duplicate", "skew"


@dataclass(frozen=True)
class MessConfig:
    """How much mess: counts of scripted events and per-reading rates."""

    meter_replacements: int = 1  # meters replaced (their counter starts again near 0) during the first day
    silent_vehicles: int = 1  # vehicles whose telematics stop reporting at ``silent_at``
    glitch_rate: float = 0.0005  # share of meter readings sent as a placeholder 0
    late_rate: float = 0.001  # share of readings delivered 2 to 10 minutes late
    duplicate_rate: float = 0.001  # share of readings sent twice
    skew_rate: float = 0.01  # share of readings whose clock is off
    max_skew_seconds: int = 25  # stays inside the minute, so a skewed reading never collides with the next


NO_MESS = MessConfig(meter_replacements=0, silent_vehicles=0, glitch_rate=0.0, late_rate=0.0,
                     duplicate_rate=0.0, skew_rate=0.0)


@dataclass(frozen=True)
class Event:
    """One piece of scripted mess: what happened, to which device, at which reading time."""

    kind: str
    device_id: str
    timestamp: str


@dataclass
class Simulation:
    """The fleet from ``start`` on, one whole minute per ``step``, with its mess applied."""

    fleet: FleetConfig
    start: datetime
    mess: MessConfig = field(default_factory=MessConfig)
    silent_at: datetime | None = None  # default: six hours after start

    def __post_init__(self):
        self.model = ChargingModel(self.fleet)
        self.rng = random.Random(self.fleet.seed * 7919 + 1)
        self.events: list[Event] = []
        n = self.fleet.vehicles
        picks = self.rng.sample(range(n), min(n, self.mess.meter_replacements + self.mess.silent_vehicles))
        self.reset_at = {
            i: self.start + timedelta(minutes=self.rng.randint(60, 23 * 60))
            for i in picks[: self.mess.meter_replacements]
        }
        silent_at = self.silent_at or self.start + timedelta(hours=6)
        self.silent_from = {i: silent_at for i in picks[self.mess.meter_replacements:]}
        self._held: dict[datetime, list[dict]] = defaultdict(list)
        self._announced: set[tuple[int, str]] = set()

    def device_ids(self) -> list[tuple[str, str]]:
        """Return every ``(vehicle id, meter id)`` pair of the fleet."""
        return [(vehicle_id(self.fleet, i), meter_id(self.fleet, i)) for i in range(self.fleet.vehicles)]

    def silent_vehicle_ids(self) -> list[str]:
        """Return the ids of the vehicles scripted to go silent."""
        return [vehicle_id(self.fleet, i) for i in sorted(self.silent_from)]

    def step(self, ts: datetime) -> list[dict]:
        """Advance the fleet to minute ``ts``; return the readings to send now (late ones due now included)."""
        ts = ts.astimezone(UTC).replace(second=0, microsecond=0)
        for i, at in self.reset_at.items():
            if at == ts:
                state = self.model.vehicles[i]
                state.kwh_ac = round(self.rng.uniform(0.0, 2.0), 3)  # the new meter's register
                self.events.append(Event(RESET, meter_id(self.fleet, i), iso(ts)))
        out: list[dict] = self._held.pop(ts, [])
        for i, meter, vehicle in self.model.step(ts):
            silent = i in self.silent_from and ts >= self.silent_from[i]
            if silent and (i, SILENT) not in self._announced:
                self._announced.add((i, SILENT))
                self.events.append(Event(SILENT, vehicle["vehicleId"], iso(ts)))
            for reading in (meter,) if silent else (meter, vehicle):
                self._deliver(reading, ts, out)
        return out

    def _deliver(self, reading: dict, ts: datetime, out: list[dict]) -> None:
        rng, mess = self.rng, self.mess
        device = reading.get("meterId") or reading["vehicleId"]
        if rng.random() < mess.skew_rate:
            skew = rng.randint(-mess.max_skew_seconds, mess.max_skew_seconds) or 1
            reading = {**reading, "timestamp": iso(ts + timedelta(seconds=skew))}
            self.events.append(Event(SKEW, device, reading["timestamp"]))
        if "meterId" in reading and rng.random() < mess.glitch_rate:
            reading = {**reading, "kwhConsumedAc": 0.0}
            self.events.append(Event(GLITCH, device, reading["timestamp"]))
        if rng.random() < mess.late_rate:
            self._held[ts + timedelta(minutes=rng.randint(2, 10))].append(reading)
            self.events.append(Event(LATE, device, reading["timestamp"]))
            return
        out.append(reading)
        if rng.random() < mess.duplicate_rate:
            out.append(dict(reading))
            self.events.append(Event(DUPLICATE, device, reading["timestamp"]))

    def flush_late(self) -> list[dict]:
        """Return every reading still held back (at the end of a run, so nothing scripted is lost)."""
        held = [r for ts in sorted(self._held) for r in self._held[ts]]
        self._held.clear()
        return held

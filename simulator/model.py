"""The charging model: each simulated vehicle and its meter, minute by minute (no I/O, deterministic per seed).

A vehicle is idle, driving or charging. Charging raises SoC with a taper above 80 %, the DC counter
with it, and the meter's AC counter by DC / efficiency (efficiency inside the configured range, with
noise); the battery warms while charging and relaxes towards the ambient temperature after. Driving
lowers SoC and moves no counter. The real world's mess is added by ``simulator.mess``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

IDLE, DRIVING, CHARGING = "idle", "driving", "charging"
TAPER_FROM_SOC = 80.0
# A tapering charge never quite stops: at 100 % it still draws this share of full power (balancing).
TAPER_FLOOR = 0.05


@dataclass(frozen=True)
class FleetConfig:
    """The fleet's size, ids and physics; every default is plausible for a depot of light EVs."""

    vehicles: int = 200
    seed: int = 1
    vehicle_prefix: str = "sim-vehicle-"
    meter_prefix: str = "sim-meter-"
    efficiency_range: tuple[float, float] = (0.85, 0.95)
    efficiency_noise: float = 0.01
    capacity_kwh_range: tuple[float, float] = (50.0, 100.0)
    charger_kw_choices: tuple[float, ...] = (7.4, 11.0, 22.0, 50.0)
    drive_kw_range: tuple[float, float] = (8.0, 20.0)
    ambient_c_range: tuple[float, float] = (12.0, 24.0)
    voltage_nominal: float = 230.0


def vehicle_id(config: FleetConfig, i: int) -> str:
    """Return the id of vehicle ``i``."""
    return f"{config.vehicle_prefix}{i:05d}"


def meter_id(config: FleetConfig, i: int) -> str:
    """Return the id of the meter that feeds vehicle ``i``."""
    return f"{config.meter_prefix}{i:05d}"


def iso(ts: datetime) -> str:
    """Format a timestamp as the API expects (UTC, explicit offset, whole seconds)."""
    return ts.astimezone(UTC).replace(microsecond=0).isoformat()


def taper(soc: float) -> float:
    """Return the share of the charger's power the battery accepts at ``soc`` (linear taper above 80 %)."""
    if soc < TAPER_FROM_SOC:
        return 1.0
    return max(TAPER_FLOOR, (100.0 - soc) / (100.0 - TAPER_FROM_SOC))


@dataclass
class VehicleState:
    """One vehicle, the meter that feeds it, and where they are in their day."""

    index: int
    capacity_kwh: float
    charger_kw: float
    drive_kw: float
    efficiency: float
    ambient_c: float
    soc: float
    kwh_dc: float
    kwh_ac: float
    battery_c: float
    mode: str = IDLE
    minutes_left: int = 0
    target_soc: float = 100.0
    last_efficiency: float | None = field(default=None)


class ChargingModel:
    """Advance every vehicle of the fleet one minute at a time and return their true readings."""

    def __init__(self, config: FleetConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.vehicles = [self._new_vehicle(i) for i in range(config.vehicles)]

    def _new_vehicle(self, i: int) -> VehicleState:
        rng, c = self.rng, self.config
        ambient = rng.uniform(*c.ambient_c_range)
        state = VehicleState(
            index=i,
            capacity_kwh=rng.uniform(*c.capacity_kwh_range),
            charger_kw=rng.choice(c.charger_kw_choices),
            drive_kw=rng.uniform(*c.drive_kw_range),
            efficiency=rng.uniform(*c.efficiency_range),
            ambient_c=ambient,
            soc=rng.uniform(20.0, 90.0),
            kwh_dc=round(rng.uniform(100.0, 5000.0), 3),
            kwh_ac=round(rng.uniform(100.0, 6000.0), 3),
            battery_c=ambient,
        )
        self._next_mode(state, rng.choice((IDLE, DRIVING, CHARGING)))
        return state

    def _next_mode(self, v: VehicleState, mode: str) -> None:
        rng = self.rng
        v.mode = mode
        if mode == CHARGING:
            v.target_soc = rng.uniform(90.0, 100.0)
            v.minutes_left = 24 * 60  # until the target is reached
        elif mode == DRIVING:
            v.minutes_left = rng.randint(20, 120)
        else:
            v.minutes_left = rng.randint(30, 240)

    def _after(self, v: VehicleState) -> str:
        """Choose what follows the mode that just ended."""
        if v.mode == CHARGING:
            return IDLE
        if v.soc < 35.0:
            return CHARGING
        return self.rng.choice((IDLE, DRIVING, DRIVING, CHARGING))

    def advance(self, v: VehicleState, minutes: float = 1.0) -> None:
        """Move one vehicle ``minutes`` forward."""
        c, hours = self.config, minutes / 60.0
        heat_target = v.ambient_c
        if v.mode == CHARGING:
            kw = v.charger_kw * taper(v.soc)
            dc = min(kw * hours, (100.0 - v.soc) / 100.0 * v.capacity_kwh)
            lo, hi = c.efficiency_range
            efficiency = min(hi, max(lo, v.efficiency + self.rng.gauss(0.0, c.efficiency_noise)))
            v.soc = min(100.0, v.soc + dc / v.capacity_kwh * 100.0)
            v.kwh_dc += dc
            v.kwh_ac += dc / efficiency
            v.last_efficiency = efficiency
            heat_target = v.ambient_c + 4.0 + kw / 5.0
            if v.soc >= v.target_soc:
                v.minutes_left = 0
        elif v.mode == DRIVING:
            v.soc = max(5.0, v.soc - v.drive_kw * hours / v.capacity_kwh * 100.0)
            heat_target = v.ambient_c + 6.0
            if v.soc <= 15.0:
                v.minutes_left = 0
        # The battery's temperature moves a tenth of the way to its target each minute (first-order lag).
        v.battery_c += (heat_target - v.battery_c) * min(1.0, 0.1 * minutes)
        v.minutes_left -= int(minutes) if minutes >= 1 else 0
        if v.minutes_left <= 0:
            self._next_mode(v, self._after(v))

    def step(self, ts: datetime) -> list[tuple[int, dict, dict]]:
        """Advance every vehicle one minute; return ``(index, meter reading, vehicle reading)`` stamped ``ts``."""
        stamp = iso(ts)
        out = []
        for v in self.vehicles:
            self.advance(v)
            out.append((v.index, self.meter_reading(v, stamp), self.vehicle_reading(v, stamp)))
        return out

    def meter_reading(self, v: VehicleState, stamp: str) -> dict:
        """Return the meter's API body."""
        voltage = self.config.voltage_nominal + self.rng.uniform(-4.0, 4.0)
        return {"meterId": meter_id(self.config, v.index), "kwhConsumedAc": round(v.kwh_ac, 4),
                "voltage": round(voltage, 1), "timestamp": stamp}

    def vehicle_reading(self, v: VehicleState, stamp: str) -> dict:
        """Return the vehicle's API body."""
        return {"vehicleId": vehicle_id(self.config, v.index), "soc": round(v.soc, 2),
                "kwhDeliveredDc": round(v.kwh_dc, 4), "batteryTemp": round(v.battery_c, 2), "timestamp": stamp}


def minute_floor(ts: datetime) -> datetime:
    """Return ``ts`` cut to its whole minute."""
    return ts.replace(second=0, microsecond=0)


def minutes_between(start: datetime, end: datetime) -> list[datetime]:
    """Return every whole minute in ``[start, end)``."""
    start = minute_floor(start)
    count = max(0, int((end - start).total_seconds() // 60))
    return [start + timedelta(minutes=k) for k in range(count)]

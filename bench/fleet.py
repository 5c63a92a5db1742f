"""The simulated fleet: device ids and the reading every device sends at every minute.

Device ``i`` is meter ``meter-iiiii`` feeding vehicle ``vehicle-iiiii``. A reading is identified by a
sequence number ``n``: ``n`` walks over all meters and vehicles (alternately) minute after minute, so
every reading of a run is unique (its primary key ``(device_id, ts)`` is never a duplicate) as long
as two runs use different base times.
"""

from __future__ import annotations

from datetime import UTC, datetime


def meter_id(i: int) -> str:
    """Return the id of meter ``i``."""
    return f"meter-{i:05d}"


def vehicle_id(i: int) -> str:
    """Return the id of vehicle ``i`` (charged through meter ``i``)."""
    return f"vehicle-{i:05d}"


def iso(epoch_seconds: float) -> str:
    """Format an epoch time as ISO-8601 with an explicit UTC offset."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()


def reading(n: int, devices: int, base_ts: float) -> dict:
    """Return the ``n``-th reading of a fleet of ``devices`` meters and ``devices`` vehicles from ``base_ts``."""
    minute, slot = divmod(n, 2 * devices)
    i = slot >> 1
    ts = base_ts + minute * 60.0
    return device_reading(i, slot & 1 == 1, ts / 60.0, iso(ts))


def device_reading(i: int, is_vehicle: bool, minutes: float, timestamp: str) -> dict:
    """Return the API body of device ``i``'s reading at ``minutes`` since the epoch.

    The counters grow with the time itself, so they only grow from one phase to the next, and the
    day loaded into Postgres (sql/bench/load_day_*.sql) uses the same formulas at whole minutes.
    """
    if is_vehicle:
        return {
            "vehicleId": vehicle_id(i),
            "soc": float(int(minutes) % 100),
            "kwhDeliveredDc": i % 97 + minutes * 0.045,
            "batteryTemp": 20.0 + i % 15,
            "timestamp": timestamp,
        }
    return {
        "meterId": meter_id(i),
        "kwhConsumedAc": i % 97 + minutes * 0.05,
        "voltage": 225.0 + i % 10,
        "timestamp": timestamp,
    }


def copy_rows(start: int, count: int, devices: int, base_ts: float) -> tuple[list[str], list[str]]:
    """Return readings ``start .. start+count`` as COPY text lines: (meter rows, vehicle rows)."""
    meters: list[str] = []
    vehicles: list[str] = []
    for n in range(start, start + count):
        step, slot = divmod(n, 2 * devices)
        i = slot >> 1
        epoch = base_ts + step * 60.0
        minute = int(epoch // 60)
        ts = iso(epoch)
        if slot & 1:
            vehicles.append(f"{vehicle_id(i)}\t{ts}\t{float(minute % 100)!r}\t{i % 97 + minute * 0.045!r}\t"
                            f"{20.0 + i % 15!r}")
        else:
            meters.append(f"{meter_id(i)}\t{ts}\t{i % 97 + minute * 0.05!r}\t{225.0 + i % 10!r}")
    return meters, vehicles

"""Redis memory per device (its latest hash) and per backlog entry (stream entry, and pending), measured.

Starts a private redis-server (nothing else in it), writes readings through the engine's own
ingest script (LatestStateStore.append) and reads:
  1. N new devices, one reading each: the ``used_memory`` delta less the stream's own size is
     the N latest hashes with their TTLs (keyspace and expiry entries included);
  2. N more readings of the same devices: the stream's MEMORY USAGE over its length is one
     backlog entry (used_memory deltas this small are blurred by allocator and buffer noise);
  3. a consumer group reads them all without acknowledging: the pending entries list's extra.
Run: python -m bench.redis_memory --devices 20000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common.streams import CONSUMER_GROUP, METER, STREAM_KEY, VEHICLE, Reading, latest_key
from tests.reliability.servers import PrivateRedis
from web.latest_state import LatestStateStore


def _readings(devices: int, minute: int) -> list[Reading]:
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=60 - minute)
    out = []
    for i in range(devices):
        if i % 2:
            out.append(Reading(METER, f"meter-{i:06d}", ts, (1234.5 + minute, 230.1)))
        else:
            out.append(Reading(VEHICLE, f"vehicle-{i:06d}", ts, (55.5, 321.25 + minute, 31.5)))
    return out


def measure(devices: int) -> dict:
    """Return bytes per device and per backlog entry for ``devices`` devices (half meters, half vehicles)."""
    with tempfile.TemporaryDirectory(prefix="redis-memory-") as root:
        server = PrivateRedis(Path(root))
        server.start()
        try:
            client = server.client()
            store = LatestStateStore(client)

            def used() -> int:
                return int(client.info("memory")["used_memory"])

            def append(readings: list[Reading]) -> None:
                for start in range(0, len(readings), 1000):
                    store.append(readings[start:start + 1000])

            base = used()
            append(_readings(devices, 1))
            first = used()
            first_stream_bytes = client.memory_usage(STREAM_KEY, samples=0)
            append(_readings(devices, 2))
            stream_bytes = client.memory_usage(STREAM_KEY, samples=0)
            second = used()
            client.xgroup_create(STREAM_KEY, CONSUMER_GROUP, id="0")
            read = 0
            while read < 2 * devices:
                batch = client.xreadgroup(CONSUMER_GROUP, "bench", {STREAM_KEY: ">"}, count=5000)
                if not batch:
                    break
                read += len(batch[0][1])
            pending = used()
            sample = [latest_key(METER, f"meter-{i:06d}") for i in range(1, min(devices, 2000), 2)]
            sample_v = [latest_key(VEHICLE, f"vehicle-{i:06d}") for i in range(0, min(devices, 2000), 2)]
            meter_hash = sum(client.memory_usage(k, samples=0) for k in sample) / len(sample)
            vehicle_hash = sum(client.memory_usage(k, samples=0) for k in sample_v) / len(sample_v)
            ttl = client.ttl(sample[0])
        finally:
            server.stop()
    per_entry = stream_bytes / (2 * devices)
    return {
        "devices": devices,
        "bytes_per_device": round((first - base - first_stream_bytes) / devices),
        "bytes_per_backlog_entry": round(per_entry),
        "bytes_per_pending_entry_extra": round((pending - second) / (2 * devices)),
        "memory_usage_meter_hash": round(meter_hash),
        "memory_usage_vehicle_hash": round(vehicle_hash),
        "latest_ttl_seconds": ttl,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20000)
    print(json.dumps(measure(parser.parse_args().devices), indent=2))


if __name__ == "__main__":
    main()

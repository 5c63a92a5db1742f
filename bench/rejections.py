"""What refusing an invalid batch costs against accepting a valid one of the same size (CPU, not time).

Runs the app in this process against a Redis db of its own (flushed before and after) and POSTs
5,000-reading batches: all valid, then all invalid (five kinds of mistake). It reports, per
request, this process's CPU (``time.process_time``: JSON decoding, validation, the answer) and the
Redis server's (INFO cpu), and the answer's size. Run:
    python -m bench.rejections --redis-url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta

import orjson
import redis

from common.settings import Settings


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _bodies(size: int) -> tuple[bytes, bytes]:
    stamp = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    valid = [{"meterId": f"m{i}", "kwhConsumedAc": float(i), "voltage": 230.0, "timestamp": stamp}
             if i % 2 else
             {"vehicleId": f"v{i}", "soc": 50.0, "kwhDeliveredDc": float(i), "batteryTemp": 30.0, "timestamp": stamp}
             for i in range(size)]
    invalid = []
    for i, item in enumerate(valid):
        bad = dict(item)
        mistake = i % 5
        if mistake == 0:
            bad["timestamp"] = "yesterday"
        elif mistake == 1:
            bad["meterId" if "meterId" in bad else "vehicleId"] = "not an id"
        elif mistake == 2:
            bad["voltage" if "voltage" in bad else "soc"] = "230"
        elif mistake == 3:
            bad["voltage" if "voltage" in bad else "soc"] = 5000.0
        else:
            bad["meterId"], bad["vehicleId"] = "m", "v"
        invalid.append(bad)
    return orjson.dumps(valid), orjson.dumps(invalid)


def measure(redis_url: str, size: int = 5000, requests: int = 20) -> dict:
    """Return the per-request CPU (ms) of the valid and the invalid batch, and the answers' sizes."""
    # Validation's cost alone: the app without its key check (which needs a database of keys and
    # is measured by the single-ingest turns of bench/run.py).
    from web import build_app_without_access_control

    settings = dataclasses.replace(Settings.from_env(), redis_url=redis_url, backlog_limit=10**9,
                                   stream_length_limit=10**9)
    app = build_app_without_access_control(settings)
    client = app.test_client()
    server = redis.Redis.from_url(redis_url)
    server.flushdb()
    results = {}
    try:
        for name, body in zip(("valid", "invalid"), _bodies(size), strict=True):
            for _ in range(3):  # warm-up
                client.post("/v1/telemetry", data=body, content_type="application/json")
            cpu, redis_cpu = time.process_time(), _redis_cpu(server)
            for _ in range(requests):
                response = client.post("/v1/telemetry", data=body, content_type="application/json")
            results[name] = {
                "status": response.status_code,
                "web_cpu_ms": round((time.process_time() - cpu) / requests * 1000, 1),
                "redis_cpu_ms": round((_redis_cpu(server) - redis_cpu) / requests * 1000, 1),
                "answer_bytes": len(response.data),
            }
    finally:
        server.flushdb()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="a Redis db this run may flush")
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(measure(args.redis_url, args.size, args.requests), indent=2))


if __name__ == "__main__":
    main()

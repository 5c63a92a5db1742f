"""The load generator: a separate process driving the HTTP API with aiohttp (asyncio).

Run as ``python -m bench.loadgen`` with a JSON spec on stdin; progress goes to stderr once a
second, the result (one JSON object) to stdout. Two modes:

- ``closed``: ``concurrency`` clients each send the next request as soon as the previous answered
  (saturation throughput);
- ``rate``: requests start on a fixed schedule of ``rate`` per second whatever the answers do, and
  latency is measured from the scheduled start, so a stall is not hidden (no coordinated omission).

Workloads: ``ingest`` (``batch`` readings of the fleet per request, unique timestamps from
``base_ts``), ``ingest_now`` (one reading per request, each device in turn, stamped with the current
time: the steady load of a live fleet) and ``get`` (a random path from ``paths``).

Every request sends ``token`` as ``Authorization: Bearer``; with ``device_tokens_file`` (a JSON
object: device id -> token), a single-reading request sends its device's own key instead, as a
device would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson
import uvloop

from bench import fleet


@dataclass
class Stats:
    """What the requests of one run did."""

    started: float = 0.0
    measure_from: float = 0.0
    sent: int = 0
    done: int = 0
    ok: int = 0
    readings_ok: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, only after the warm-up
    measured_ok: int = 0
    measured_readings: int = 0
    first_failure: str | None = None
    last_done: float = 0.0


class Workload:
    """Build the requests of a run: method, path, body and how many readings the body holds."""

    def __init__(self, spec: dict, token: str | None = None, device_tokens: dict[str, str] | None = None):
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.device_headers = {device: {**self.headers, "Authorization": f"Bearer {t}"}
                               for device, t in (device_tokens or {}).items()}
        self.kind = spec["kind"]
        self.batch = int(spec.get("batch", 1))
        self.devices = int(spec.get("devices", 10_000))
        self.base_ts = float(spec.get("base_ts", 0))
        self.next_seq = int(spec.get("start", 0))
        self.paths = spec.get("paths", [])
        self.posts = spec.get("posts", [])
        self.rng = random.Random(spec.get("seed", 6))
        self.ready: list[tuple[str, str, bytes | None, int]] = []
        if spec.get("pregenerate"):
            # Build every body before the clock starts, so the client's own CPU stays out of the way.
            self.ready = [self._build() for _ in range(int(spec["pregenerate"]))]
            self.ready.reverse()

    def next_request(self) -> tuple[str, str, bytes | None, int, dict]:
        """Return (method, path, body, readings in the body, headers) for the next request."""
        return self.ready.pop() if self.ready else self._build()

    def _build(self) -> tuple[str, str, bytes | None, int, dict]:
        if self.kind == "get":
            return "GET", self.rng.choice(self.paths), None, 0, self.headers
        if self.kind == "post":  # reads whose arguments are a JSON body: [path, body] pairs
            path, body = self.rng.choice(self.posts)
            return "POST", path, body.encode(), 0, self.headers
        start, self.next_seq = self.next_seq, self.next_seq + self.batch
        if self.kind == "ingest_now":
            now = time.time()
            stamp, minutes = fleet.iso(now), now / 60.0
            slots = 2 * self.devices
            items = [
                fleet.device_reading((n % slots) >> 1, n % 2 == 1, minutes, stamp)
                for n in range(start, start + self.batch)
            ]
        else:
            items = [fleet.reading(n, self.devices, self.base_ts) for n in range(start, start + self.batch)]
        body = orjson.dumps(items[0] if self.batch == 1 else items)
        headers = self.headers
        if self.batch == 1 and self.device_headers:
            item = items[0]
            headers = self.device_headers.get(item.get("meterId") or item.get("vehicleId"), headers)
        return "POST", "/v1/telemetry", body, self.batch, headers


async def _one(session: aiohttp.ClientSession, url: str, workload: Workload, stats: Stats,
               scheduled: float | None = None) -> None:
    method, path, body, readings, headers = workload.next_request()
    started = time.perf_counter() if scheduled is None else scheduled
    stats.sent += 1
    try:
        async with session.request(method, url + path, data=body, headers=headers) as resp:
            payload = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        stats.done += 1
        stats.errors[type(exc).__name__] += 1
        if stats.first_failure is None:
            stats.first_failure = f"{type(exc).__name__}: {exc}"
        return
    finished = time.perf_counter()
    stats.done += 1
    stats.last_done = finished
    stats.statuses[str(status)] += 1
    good = 200 <= status < 300
    if good:
        stats.ok += 1
        stats.readings_ok += readings
    elif stats.first_failure is None:
        stats.first_failure = f"{status} {method} {path[:80]}: {payload[:300].decode(errors='replace')}"
    if finished >= stats.measure_from and started >= stats.measure_from - 1e-9:
        stats.latencies.append(finished - started)
        if good:
            stats.measured_ok += 1
            stats.measured_readings += readings


async def _closed(session, url, workload, stats, spec, deadline) -> None:
    budget = spec.get("requests")

    async def client() -> None:
        while time.perf_counter() < deadline and (budget is None or stats.sent < budget):
            await _one(session, url, workload, stats)

    await asyncio.gather(*(client() for _ in range(int(spec["concurrency"]))))


async def _rate(session, url, workload, stats, spec, deadline) -> None:
    interval = 1.0 / float(spec["rate"])
    budget = spec.get("requests")
    tasks: set[asyncio.Task] = set()
    i = 0
    while True:
        scheduled = stats.started + i * interval
        if scheduled >= deadline or (budget is not None and i >= budget):
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one(session, url, workload, stats, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=30)


async def _progress(stats: Stats, label: str, stop: asyncio.Event) -> None:
    last_done, last_t = 0, time.perf_counter()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        now = time.perf_counter()
        rate = (stats.done - last_done) / max(1e-9, now - last_t)
        last_done, last_t = stats.done, now
        failed = stats.done - stats.ok
        print(f"  [{label}] {now - stats.started:6.1f}s  {stats.done:>9,} requests  {rate:>8,.0f}/s  "
              f"readings ok {stats.readings_ok:>10,}  failed {failed:,}", file=sys.stderr, flush=True)


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def summarize(stats: Stats, ended: float) -> dict:
    """Turn the raw counters into the result the orchestrator reads."""
    lat = sorted(stats.latencies)
    window = max(1e-9, (stats.last_done or ended) - stats.measure_from)
    ms = {f"p{q:g}": (None if (v := _percentile(lat, q)) is None else round(v * 1000, 3)) for q in (50, 90, 95, 99)}
    ms["max"] = round(lat[-1] * 1000, 3) if lat else None
    return {
        "requests": stats.done,
        "ok": stats.ok,
        "readings_ok": stats.readings_ok,
        "statuses": dict(stats.statuses),
        "errors": dict(stats.errors),
        "first_failure": stats.first_failure,
        "elapsed_s": round(ended - stats.started, 3),
        "measured_s": round(window, 3),
        "ok_per_s": round(stats.measured_ok / window, 1),
        "readings_per_s": round(stats.measured_readings / window, 1),
        "latency_ms": ms,
        "latency_samples": len(lat),
    }


async def run(spec: dict) -> dict:
    """Run the spec and return its summary."""
    url = spec["url"].rstrip("/")
    device_tokens = None
    if spec.get("device_tokens_file"):
        with open(spec["device_tokens_file"], "rb") as f:
            device_tokens = orjson.loads(f.read())
    workload = Workload(spec["workload"], spec.get("token"), device_tokens)
    limit = int(spec.get("connections", spec.get("concurrency", 64)))
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=float(spec.get("timeout", 30)))
    stats = Stats()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        stats.started = time.perf_counter()
        stats.measure_from = stats.started + float(spec.get("warmup", 0))
        deadline = stats.started + float(spec["duration"])
        progress = asyncio.create_task(_progress(stats, spec.get("label", "load"), stop))
        if spec["mode"] == "rate":
            await _rate(session, url, workload, stats, spec, deadline)
        else:
            await _closed(session, url, workload, stats, spec, deadline)
        ended = time.perf_counter()
        stop.set()
        await progress
    result = summarize(stats, ended)
    if spec.get("keep_latencies"):  # bench/history_ab.py pools turns' latencies
        result["latencies_ms"] = [round(v * 1000, 3) for v in stats.latencies]
    return result


def main() -> None:
    """Read the spec from stdin, run it, print the summary as JSON."""
    spec = json.load(sys.stdin)
    # uvloop: the client's own CPU per request is shared with the servers on the same cores.
    print(json.dumps(uvloop.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()

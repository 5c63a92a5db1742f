"""Drive a simulated fleet against a running engine: map it, backfill a window quickly, then stream in real time."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from simulator.client import BATCH_SIZE, EngineClient
from simulator.mess import Simulation
from simulator.model import minutes_between

log = logging.getLogger("simulator")


def provision(client: EngineClient, simulation: Simulation, parallel: int = 4) -> int:
    """Map every simulated vehicle to its meter through the public API, ``parallel`` at a time; return how many."""
    pairs = simulation.device_ids()
    with ThreadPoolExecutor(parallel, thread_name_prefix="provision") as pool:
        for _ in pool.map(lambda pair: client.map_vehicle(*pair), pairs):
            pass  # map() re-raises the first failure here
    return len(pairs)


def backfill(client: EngineClient, simulation: Simulation, until: datetime) -> int:
    """Send every minute from the simulation's start to ``until`` in full batches; return readings accepted."""
    pending: list[dict] = []
    accepted = 0
    for ts in minutes_between(simulation.start, until):
        pending.extend(simulation.step(ts))
        if len(pending) >= BATCH_SIZE:
            accepted += client.ingest(pending)
            pending = []
    return accepted + client.ingest(pending)


def stream(client: EngineClient, simulation: Simulation, start: datetime, stop: threading.Event) -> int:
    """Send each whole minute's readings from ``start`` on as the wall clock reaches it, until ``stop`` is set."""
    accepted, ts = 0, start
    while not stop.is_set():
        now = datetime.now(UTC)
        if ts <= now:
            accepted += client.ingest(simulation.step(ts))
            ts += timedelta(minutes=1)
        else:
            stop.wait((ts - now).total_seconds())
    return accepted


def run(client: EngineClient, simulation: Simulation, backfill_until: datetime,
        live: bool, stop: threading.Event | None = None) -> dict:
    """Provision, backfill, then (when ``live``) stream until ``stop``; return what was sent."""
    started = time.monotonic()
    mapped = provision(client, simulation)
    backfilled = backfill(client, simulation, backfill_until)
    log.info("backfilled %d readings of %d vehicles in %.1f s", backfilled, mapped, time.monotonic() - started)
    print(f"simulator: {mapped} vehicles mapped, {backfilled} readings backfilled "
          f"in {time.monotonic() - started:.1f} s", flush=True)
    streamed = 0
    if live:
        streamed = stream(client, simulation, backfill_until, stop or threading.Event())
    client.ingest(simulation.flush_late())
    return {"vehicles": mapped, "backfilled": backfilled, "streamed": streamed}

"""``make demo``: the engine as ``make run`` starts it, a simulated fleet provisioned, backfilled and streaming.

Ctrl-C (or SIGTERM) stops the simulator, then the engine's whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simulator.client import EngineClient
from simulator.engine_keys import create_key
from simulator.mess import MessConfig, Simulation
from simulator.model import FleetConfig
from simulator.run import run

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY_FILE = ROOT / ".data" / "admin.key"  # written by `make run` once the engine has keys
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


def env_int(name: str, default: int) -> int:
    """Return a positive integer from the environment, or exit saying what is wrong."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        sys.exit(f"demo: {name} must be a positive integer, got {raw!r}")
    return int(raw)


def start_engine() -> subprocess.Popen:
    """Start ``make run`` in its own session, so that stopping it stops every process it started."""
    return subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, start_new_session=True)


def stop_engine(engine: subprocess.Popen) -> None:
    """SIGTERM the engine's process group, then SIGKILL what is left after the timeout."""
    if engine.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(engine.pid, signal.SIGTERM)
        try:
            engine.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(engine.pid, signal.SIGKILL)
            engine.wait(5)


def wait_until_up(client: EngineClient, engine: subprocess.Popen, stop: threading.Event) -> bool:
    """Wait for the engine's liveness probe; False if it exited or the user stopped the demo."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not stop.is_set():
        if engine.poll() is not None:
            return False
        if client.healthy():
            return True
        stop.wait(0.5)
    return False


def admin_key(stop: threading.Event) -> str | None:
    """Return the admin key ``make run`` wrote, or None if this engine has no keys (waits briefly for the file)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not stop.is_set():
        if ADMIN_KEY_FILE.exists() and ADMIN_KEY_FILE.read_text().strip():
            return ADMIN_KEY_FILE.read_text().strip()
        stop.wait(0.5)
    return None


def read_key(client: EngineClient) -> str | None:
    """Create the dashboard's key through the public API (POST /v1/keys); None if keys are not there.

    It can ``read`` (every page) and read ``metrics`` (the fleet page's ingest rate and backlog).
    """
    status, answer = client.request("POST", "/v1/keys", {"name": "demo-dashboard", "scopes": ["read", "metrics"]})
    if status in (200, 201) and isinstance(answer, dict) and answer.get("token"):
        return answer["token"]
    if status in (404, 405):
        return None
    print(f"demo: could not create a read key: HTTP {status} {json.dumps(answer)}", file=sys.stderr)
    return None


def main() -> int:
    """Run the demo until Ctrl-C."""
    vehicles = env_int("DEMO_VEHICLES", 200)
    backfill_hours = env_int("DEMO_BACKFILL_HOURS", 24)
    port = env_int("PORT", 8000)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine = start_engine()
    try:
        client = EngineClient(url)
        if not wait_until_up(client, engine, stop):
            if not stop.is_set():
                print(f"demo: the engine did not answer at {url} (see its output above)", file=sys.stderr)
            return 0 if stop.is_set() else 1
        # An engine without keys answers a read without one; only then is there no admin key to wait for.
        if client.request("GET", "/v1/vehicles?limit=1")[0] == 401:
            # `make run` writes the file only when the database has no admin key yet; else make one for the demo.
            client.key = admin_key(stop)
            if client.key is None or client.request("GET", "/v1/keys?limit=1")[0] != 200:
                client.key = create_key(dict(os.environ), "demo-simulator", "admin")
            if client.key is None:
                print(f"demo: the engine needs keys but {ADMIN_KEY_FILE} did not appear", file=sys.stderr)
                return 1
        key = read_key(client) if client.key else None
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        simulation = Simulation(FleetConfig(vehicles=vehicles), now - timedelta(hours=backfill_hours), MessConfig(),
                                silent_at=now - timedelta(minutes=30))
        print(f"demo: provisioning {vehicles} simulated vehicles and backfilling {backfill_hours} h ...", flush=True)
        sent = {}
        feeder = threading.Thread(target=lambda: sent.update(run(client, simulation, now, live=True, stop=stop)),
                                  name="simulator", daemon=True)
        feeder.start()
        print(f"demo: dashboard at {url}/  (API docs at {url}/docs)", flush=True)
        if key:
            print(f"demo: sign in with this read key: {key}", flush=True)
        else:
            print("demo: this engine has no keys yet: sign in with any text, e.g. demo", flush=True)
        print("demo: Ctrl-C stops the simulator and the engine", flush=True)
        while feeder.is_alive() and not stop.is_set():
            stop.wait(1.0)
        stop.set()
        feeder.join(STOP_TIMEOUT)
        print(f"demo: simulator stopped {sent or ''}".rstrip(), flush=True)
        return 0
    finally:
        stop_engine(engine)
        print("demo: engine stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())

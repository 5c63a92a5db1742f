"""Browser fixtures: the real engine (gunicorn, worker, scheduler) with a simulated fleet, and headless Chromium.

Chromium is Debian's package (``.ci/run`` installs it), driven by Playwright's Python package through
``executable_path``: no browser is downloaded. Screenshots land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis

from common.streams import CONSUMER_GROUP, STREAM_KEY
from simulator.client import EngineClient
from simulator.engine_keys import create_key
from simulator.mess import MessConfig, Simulation
from simulator.model import FleetConfig
from simulator.run import run
from tests.conftest import TABLES
from tests.processes import ROOT, Process, free_port, port_answers, process_env, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
FLEET_SIZE = 8
SILENT_MINUTES = 40
# The simulated day is 23 h long, so that every 24 h figure stays the same while the tests run (no reading leaves
# the window's start): the dashboard's numbers and the ones a test asks for a moment later must be equal.
HISTORY_HOURS = 23


def launch_chromium(playwright):
    """Start Debian's headless Chromium with the flags these machines need."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def empty_stores(settings) -> None:
    """Empty the session's tables and its private Redis db (the other tests expect them empty)."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    client.close()


def drained(redis_url: str) -> bool:
    """Tell whether every stream entry has been written to Postgres and acknowledged."""
    client = redis.Redis.from_url(redis_url)
    try:
        groups = client.xinfo_groups(STREAM_KEY)
    except redis.ResponseError:
        return False
    finally:
        client.close()
    group = next((g for g in groups if g["name"] in (CONSUMER_GROUP, CONSUMER_GROUP.encode())), None)
    return group is not None and group["pending"] == 0 and group["lag"] == 0


class Engine:
    """A running engine: its URL, the keys to use, the simulated fleet, and its processes' logs."""

    def __init__(self, url, env, processes, read_key, write_key, simulation):
        self.url, self.env, self.processes = url, env, processes
        self.read_key, self.write_key, self.simulation = read_key, write_key, simulation
        self.identity = read_key is not None

    def api(self, path: str):
        """GET ``path`` with the read key; return the decoded JSON."""
        status, body = EngineClient(self.url, self.read_key).request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def efficiency_ratios(self) -> dict[str, float | None]:
        """Return each vehicle's 24 h efficiency from the source the dashboard reads: the ranking, else each answer."""
        status, ranking = EngineClient(self.url, self.read_key).request("GET", "/v1/analytics/vehicles?limit=1000")
        if status == 200:
            return {v["vehicleId"]: v["efficiencyRatio"] for v in ranking["vehicles"]}
        return {v: self.api(f"/v1/analytics/performance/{v}?hours=24")["efficiencyRatio"]
                for v, _ in self.simulation.device_ids()}

    def figures_settled(self) -> bool:
        """Tell whether the efficiencies the dashboard reads have stopped changing (the rollups caught up)."""
        before = self.efficiency_ratios()
        time.sleep(6.0)  # longer than the rollup job's period (5 s), so that a pass in progress shows
        return self.efficiency_ratios() == before

    def logs(self) -> str:
        """Return every process's output (for a failed wait)."""
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in self.processes)


@pytest.fixture(scope="module")
def engine(settings, tmp_path_factory):
    """Start web, worker, rollups and scheduler on a free port, map and backfill a day of a small simulated fleet."""
    empty_stores(settings)
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port, DRAIN_BLOCK_MS="200")
    log_dir = tmp_path_factory.mktemp("engine")
    processes = [Process(name, env, log_dir) for name in ("web", "worker", "rollups", "scheduler")]
    try:
        yield _provisioned(settings, env, port, processes)
    finally:  # also when the setup failed: no process may outlive the module, no row the next tests
        for process in processes:
            process.stop()
        empty_stores(settings)


def _provisioned(settings, env: dict[str, str], port: int, processes: list[Process]) -> Engine:
    """Wait for the engine, create keys, map and backfill the simulated fleet; return the engine's handle."""
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
    except AssertionError:
        raise AssertionError(processes[0].output()) from None
    write_key = create_key(env, "browser-test-simulator", "admin")
    read_key = create_key(env, "browser-test-dashboard", "read")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    simulation = Simulation(FleetConfig(vehicles=FLEET_SIZE, seed=5), now - timedelta(hours=HISTORY_HOURS),
                            MessConfig(meter_replacements=1, silent_vehicles=1),
                            silent_at=now - timedelta(minutes=SILENT_MINUTES))
    client = EngineClient(f"http://127.0.0.1:{port}", write_key)
    run(client, simulation, now, live=False, stop=threading.Event())
    engine = Engine(f"http://127.0.0.1:{port}", env, processes, read_key, write_key, simulation)
    try:
        wait_for(lambda: drained(settings.redis_url), 90, interval=0.2, message="the drain to catch up")
        wait_for(engine.figures_settled, 60, interval=0.5, message="the fleet figures to stop changing")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{engine.logs()}") from None
    return engine


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the module."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser tab (its own sessionStorage) at a laptop's size."""
    # bypass_csp: Playwright polls wait_for_function with eval, which the page's policy (rightly) forbids.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

"""Browser benchmark of the dashboard: fleet page first meaningful paint and vehicle page with its 24 h charts.

``python -m bench.dashboard --database energy_bench_dash --redis-url redis://127.0.0.1:6379/12``
starts the engine (web, worker, scheduler from the Procfile) on a fresh database, loads a simulated
fleet of ``--vehicles`` (default 10,000) through the public API (mappings, then ``--fleet-hours`` of
readings each) plus a few vehicles with a full day, and measures in headless Chromium with the
browser's own clock (``performance.now()`` since navigation start, read through Playwright):

- fleet: from navigation to the first table row in the DOM (the first meaningful paint);
- vehicle: from navigation to both charts drawn (or their empty states set) and the figures filled.

Each page is loaded ``--runs`` times in a fresh browser context (cold cache); median and max are
reported, and written to bench-results/dashboard.json. Targets: <= 1 s each (docs/dashboard.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.processes import ROOT, ProcessSet, free_port, http_ok, procfile_commands, wait_until
from common.database import release
from common.settings import Settings
from common.streams import CONSUMER_GROUP, STREAM_KEY
from simulator.client import EngineClient
from simulator.engine_keys import create_key
from simulator.mess import MessConfig, Simulation
from simulator.model import FleetConfig
from simulator.run import run

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
TARGET_MS = 1000.0
KEY_STORAGE = "energyDashboard.key"
# Installed before the page's own script: record the browser's clock when the page is meaningful.
FLEET_PROBE = """
window.__ready = null;
new MutationObserver((changes, observer) => {
  if (document.querySelector('#fleet-rows tr')) { window.__ready = performance.now(); observer.disconnect(); }
}).observe(document, {childList: true, subtree: true});
"""
VEHICLE_PROBE = """
window.__ready = null;
new MutationObserver((changes, observer) => {
  const soc = document.getElementById('chart-soc'), energy = document.getElementById('chart-energy');
  const eff = document.getElementById('v-eff');
  if (soc && energy && eff && soc.dataset.points !== undefined && energy.dataset.points !== undefined
      && eff.textContent !== '\\u2013') {
    window.__ready = performance.now();
    window.__points = [Number(soc.dataset.points), Number(energy.dataset.points)];
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true, attributes: true, characterData: true});
"""


def log(message: str) -> None:
    """Print a progress line with the time."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def drained(client: redis.Redis) -> bool:
    """Tell whether the drain has written and acknowledged every stream entry."""
    try:
        groups = client.xinfo_groups(STREAM_KEY)
    except redis.ResponseError:
        return False
    return any(g["pending"] == 0 and g["lag"] == 0 for g in groups if g["name"] in (CONSUMER_GROUP,))


def measure(browser, url: str, key: str, probe: str, runs: int) -> list[dict]:
    """Load ``url`` ``runs`` times in fresh contexts; return each run's browser-clock figures."""
    results = []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)});" + probe)
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("() => window.__ready !== null", timeout=30_000)
        figures = page.evaluate("""() => {
          const nav = performance.getEntriesByType('navigation')[0];
          return {readyMs: window.__ready, points: window.__points || null,
                  responseEndMs: nav.responseEnd, domContentLoadedMs: nav.domContentLoadedEventEnd,
                  apiCalls: performance.getEntriesByType('resource').filter(r => r.name.includes('/v1/')).length};
        }""")
        results.append(figures)
        context.close()
    return results


def summarize(name: str, runs: list[dict]) -> dict:
    """Return the median and max of the runs' ready times and whether the target holds."""
    ready = [r["readyMs"] for r in runs]
    summary = {"medianMs": round(statistics.median(ready), 1), "maxMs": round(max(ready), 1),
               "targetMs": TARGET_MS, "met": statistics.median(ready) <= TARGET_MS, "runs": runs}
    log(f"{name}: median {summary['medianMs']} ms, max {summary['maxMs']} ms (target {TARGET_MS:.0f} ms)")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Set up the fleet, measure both pages, print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="energy_bench_dashboard")
    parser.add_argument("--server-url", default="postgresql://127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--fleet-hours", type=float, default=1.0, help="readings of the whole fleet, hours back")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    store = redis.Redis.from_url(args.redis_url, decode_responses=True)
    if store.connection_pool.connection_kwargs.get("db", 0) == 0:
        raise SystemExit("refusing to flush Redis db 0: give --redis-url with another db")
    database_url = make_conninfo(args.server_url, dbname=args.database)
    with psycopg.connect(args.server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database)))
    store.flushdb()
    release(Settings.from_env({"DATABASE_URL": database_url, "REDIS_URL": args.redis_url}))
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": args.redis_url, "PORT": str(port),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
           "PYTHONUNBUFFERED": "1"}
    run_dir = ROOT / "bench-results" / f"dashboard-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    processes = ProcessSet(env, run_dir / "logs")
    commands = procfile_commands()
    try:
        for role in ("web", "worker", "scheduler"):
            processes.start(role, commands[role])
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "gunicorn to answer /healthz")
        url = f"http://127.0.0.1:{port}"
        write_key = create_key(env, "bench-dashboard-simulator", "admin")
        read_key = create_key(env, "bench-dashboard-reader", "read", "metrics") or "no-identity-yet"
        client = EngineClient(url, write_key, timeout=120)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        started = time.monotonic()
        fleet = Simulation(FleetConfig(vehicles=args.vehicles, seed=2), now - timedelta(hours=args.fleet_hours),
                           MessConfig(), silent_at=now - timedelta(minutes=30))
        sent = run(client, fleet, now, live=False, stop=threading.Event())
        day = Simulation(FleetConfig(vehicles=3, seed=3, vehicle_prefix="day-vehicle-", meter_prefix="day-meter-"),
                         now - timedelta(hours=24), MessConfig(silent_vehicles=0))
        sent_day = run(client, day, now, live=False, stop=threading.Event())
        log(f"loaded {sent} + {sent_day} in {time.monotonic() - started:.0f} s; waiting for the drain")
        wait_until(lambda: drained(store), 900, "the drain to catch up", interval=0.5)
        log(f"drained after {time.monotonic() - started:.0f} s")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            vehicle_id = day.device_ids()[0][0]
            results = {
                "vehicles": args.vehicles + 3, "fleetHours": args.fleet_hours, "runs": args.runs,
                "measuredAt": datetime.now(UTC).isoformat(),
                "fleetFirstMeaningfulPaint": summarize("fleet first meaningful paint",
                                                       measure(browser, url + "/", read_key, FLEET_PROBE, args.runs)),
                "vehiclePage24h": summarize(f"vehicle page 24 h ({vehicle_id})",
                                            measure(browser, f"{url}/#/vehicles/{vehicle_id}", read_key,
                                                    VEHICLE_PROBE, args.runs)),
            }
            browser.close()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "dashboard.json").write_text(json.dumps(results, indent=2))
        log(f"figures in {run_dir / 'dashboard.json'}")
        print(json.dumps({k: {"medianMs": v["medianMs"], "maxMs": v["maxMs"], "met": v["met"]}
                          for k, v in results.items() if isinstance(v, dict)}, indent=2))
        return 0
    finally:
        processes.stop_all()


if __name__ == "__main__":
    sys.exit(main())

"""Side-by-side history reads: two running web servers (say, old and new code) on one loaded database, in turns.

A shared machine drifts by tens of percent within minutes, so the two sides take turns (A, B, A,
B, ...) with the same requests, and each figure is pooled over each side's turns; the note gives
every turn's p50 so that a drift shows. Run it against a database the benchmark kept
(``bench.run --only analytics --keep``), each server started with its own code:

    .venv/bin/python -m bench.history_ab --database-url postgresql://127.0.0.1/energy_bench_14 \
        --token "$ADMIN_TOKEN" --a http://127.0.0.1:8101 --b http://127.0.0.1:8102 --turns 6 --requests 200
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from datetime import UTC

import psycopg

from bench import fleet
from bench.history_phase import history_paths


def loaded_day(database_url: str) -> tuple:
    """Return (end of the loaded day, its minutes) from the benchmark's first vehicle's readings."""
    with psycopg.connect(database_url) as conn:
        first, end = conn.execute("SELECT min(ts), max(ts) FROM vehicle_readings WHERE vehicle_id = %s",
                                  (fleet.vehicle_id(0),)).fetchone()
    return end.astimezone(UTC), round((end - first).total_seconds() / 60) + 1


def one_turn(url: str, token: str, paths: list[str], requests: int, label: str) -> list[float]:
    """Run the load generator once (one closed-loop client) and return its latencies, ms."""
    spec = {"url": url, "token": token, "mode": "closed", "concurrency": 1, "duration": 600,
            "requests": requests, "warmup": 0, "label": label, "keep_latencies": True,
            "workload": {"kind": "get", "paths": paths, "seed": random.randrange(1 << 30)}}
    done = subprocess.run([sys.executable, "-m", "bench.loadgen"], input=json.dumps(spec), capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout)
    if result["ok"] != result["requests"]:
        raise SystemExit(f"{label}: {result['requests'] - result['ok']} failed: {result['first_failure']}")
    return result["latencies_ms"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank, as the load generator reports it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the turns, print one line per figure and side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="the database the benchmark kept")
    parser.add_argument("--token", required=True, help="a read or admin key valid on both servers")
    parser.add_argument("--a", required=True, help="base URL of side A (e.g. the old code)")
    parser.add_argument("--b", required=True, help="base URL of side B (e.g. the new code)")
    parser.add_argument("--turns", type=int, default=6, help="turns per side and figure")
    parser.add_argument("--requests", type=int, default=200, help="requests per turn")
    parser.add_argument("--devices", type=int, default=10_000, help="vehicles in the loaded day")
    parser.add_argument("--figures", default="history_page,history_buckets,history_csv")
    args = parser.parse_args(argv)
    end, minutes = loaded_day(args.database_url)
    # The vehicles bench/run.py's analytics and history phases pick.
    sample = random.Random(3).sample(range(args.devices), min(500, args.devices))
    vehicles = [fleet.vehicle_id(i) for i in random.Random(14).sample(sample, min(200, len(sample)))]
    all_paths = history_paths(vehicles, end, minutes)
    summary = {}
    for figure in args.figures.split(","):
        sides = {"a": [], "b": []}
        turn_p50 = {"a": [], "b": []}
        for turn in range(args.turns):
            order = ("a", "b") if turn % 2 == 0 else ("b", "a")  # neither side always goes first
            for side in order:
                latencies = one_turn(getattr(args, side), args.token, all_paths[figure], args.requests,
                                     f"{figure} {side}{turn}")
                sides[side] += latencies
                turn_p50[side].append(round(statistics.median(latencies), 2))
        summary[figure] = {}
        for side, latencies in sides.items():
            summary[figure][side] = {"p50": round(percentile(latencies, 50), 2),
                                     "p95": round(percentile(latencies, 95), 2), "turn_p50": turn_p50[side]}
            print(f"{figure:16} {side}: p50 {summary[figure][side]['p50']:6.2f} ms  p95 "
                  f"{summary[figure][side]['p95']:6.2f} ms  turns' p50 {turn_p50[side]}", flush=True)
        ratio = summary[figure]["b"]["p50"] / summary[figure]["a"]["p50"]
        print(f"{figure:16} b/a p50 {ratio:.2f}, p95 {summary[figure]['b']['p95'] / summary[figure]['a']['p95']:.2f}",
              flush=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

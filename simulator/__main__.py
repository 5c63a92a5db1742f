"""``python -m simulator --url URL --key KEY``: a simulated fleet against any running engine."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta

from simulator.client import EngineClient
from simulator.mess import NO_MESS, MessConfig, Simulation
from simulator.model import FleetConfig
from simulator.run import run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("SIMULATOR_URL", "http://127.0.0.1:8000"),
                        help="the engine's base URL (env SIMULATOR_URL)")
    parser.add_argument("--key", default=os.environ.get("SIMULATOR_KEY"),
                        help="a bearer key allowed to ingest and map (env SIMULATOR_KEY; never logged)")
    parser.add_argument("--vehicles", type=int, default=200, help="vehicles, each with its meter")
    parser.add_argument("--backfill-hours", type=float, default=24.0, help="history sent first, in batches")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prefix", default="sim-", help="device ids are PREFIXvehicle-00000 and PREFIXmeter-00000")
    parser.add_argument("--no-live", action="store_true", help="stop after the backfill")
    parser.add_argument("--no-mess", action="store_true", help="clean readings only")
    parser.add_argument("--silent-minutes", type=float, default=30.0,
                        help="the scripted silent vehicle stopped reporting this long before now")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until it is done or interrupted."""
    args = parse_args(argv)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    fleet = FleetConfig(vehicles=args.vehicles, seed=args.seed,
                        vehicle_prefix=f"{args.prefix}vehicle-", meter_prefix=f"{args.prefix}meter-")
    simulation = Simulation(fleet, now - timedelta(hours=args.backfill_hours),
                            NO_MESS if args.no_mess else MessConfig(),
                            silent_at=now - timedelta(minutes=args.silent_minutes))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client = EngineClient(args.url, args.key)
    if not client.healthy():
        print(f"simulator: no engine answers at {args.url}", file=sys.stderr)
        return 2
    sent = run(client, simulation, now, live=not args.no_live, stop=stop)
    print(f"simulator: stopped ({sent})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

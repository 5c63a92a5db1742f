"""Run the benchmark: ``python -m bench.run --size full`` (``make bench``) or ``--size smoke``.

It creates its own Postgres database and uses Redis db 13, starts the engine's real processes
from the Procfile (gunicorn with gunicorn.conf.py, RQ workers with the DrainWorker class, the
``rq cron`` scheduler), drives them from a separate load-generator process (bench/loadgen.py),
prints a table of every figure beside its floor and target and writes everything to
bench-results/. See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench import fleet, fleet_analytics, history_phase, report
from bench.dataset import load_history
from bench.drain_monitor import LAG_MISREPORTS, LagMonitor, percentile, undrained
from bench.floors import copy_floor
from bench.processes import (
    ROOT,
    ProcessSet,
    RssSampler,
    free_port,
    http_ok,
    procfile_commands,
    server_cpu_seconds,
    wait_until,
)
from common.database import release
from common.redis_clients import data_client
from common.settings import Settings
from common.streams import VEHICLE, KeySpace, drain_slot_heartbeat_key

MIB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    """How much work each phase does."""

    name: str
    devices: int = 10_000  # meters, and as many vehicles
    floor_rows: int = 1_000_000
    # Saturation: the bare floor and the engine take turns, saturation_rounds times each; a turn
    # measures for saturation_s after a warm-up (warmup_s for the first, round_warmup_s after). On a
    # shared machine whose speed drifts by tens of percent within minutes, turns keep the two
    # figures under the same drift; shorter turns, more of them, keep each pair closer in time.
    saturation_rounds: int = 8
    saturation_s: float = 6.0
    round_warmup_s: float = 2.0
    warmup_s: float = 5.0
    concurrency: int = 16
    fixed_rate: float = 500.0
    fixed_rate_s: float = 30.0
    batch: int = 500
    batched_readings: int = 1_000_000
    batched_concurrency: int = 4
    steady_s: float = 120.0
    steady_warmup_s: float = 60.0  # every device reports once before the measured part: a live fleet's state
    backlog: int = 1_200_000
    history_devices: int = 10_000
    history_minutes: int = 1440
    analytics_vehicles: int = 500
    analytics_requests: int = 3000
    latest_requests: int = 5000
    multi_requests: int = 500
    multi_ids: int = 1000


SIZES = {
    "full": Size("full"),
    "smoke": Size(
        "smoke", floor_rows=60_000, saturation_rounds=2, saturation_s=2.5, round_warmup_s=0.5, warmup_s=1.0,
        fixed_rate_s=5.0, batched_readings=40_000,
        steady_s=10.0, steady_warmup_s=3.0, backlog=40_000, history_devices=100, history_minutes=1440,
        analytics_vehicles=50, analytics_requests=300, latest_requests=500, multi_requests=50,
    ),
}


def log(message: str) -> None:
    """Print a progress line."""
    print(message, file=sys.stderr, flush=True)


class Bench:
    """One benchmark run: its database, Redis db, processes and figures."""

    def __init__(self, args: argparse.Namespace, size: Size):
        self.args = args
        self.size = size
        self.started = datetime.now(UTC)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        self.out_dir = Path(args.out_dir)
        self.run_dir = self.out_dir / f"{stamp}-{size.name}"
        self.database_url = make_conninfo(args.server_url, dbname=args.database)
        self.redis_url = args.redis_url
        self.port = free_port()
        self.bare_port = free_port()
        self.history_end: datetime | None = None  # the end of the analytics day (phase_analytics)
        self.bare = None  # the bare app's gunicorn, from phase_bare_floor to the end of phase_single_ingest
        # The engine without access control (bench/unguarded_app.py): its turns alternate with the engine's.
        self.unguarded_port = free_port()
        self.unguarded = None
        self.admin_token: str | None = None  # made by make_keys; every load sends a key
        self.device_tokens_file = self.run_dir / "device-tokens.json"
        # --redis-cluster: a private 3-master + 3-replica cluster for the data keys, 8 shards by default.
        self.cluster = None
        if args.redis_cluster:
            from tests.redis_cluster import RedisClusterNodes

            self.cluster = RedisClusterNodes(Path(tempfile.mkdtemp(prefix="bench-cluster-")))
            self.cluster.start()
        self.env = self._env()
        self.settings = Settings.from_env(self.env)
        self.keys = KeySpace.for_settings(self.settings)
        self.processes = ProcessSet(self.env, self.run_dir / "logs")
        self.rss = RssSampler(self.processes)
        self.redis = redis.Redis.from_url(self.redis_url, decode_responses=True)  # RQ's, and the data's if no cluster
        self.data = data_client(self.settings)
        self.results: dict = {"size": size.name, "launcher": args.launcher, "parameters": size.__dict__,
                              "figures": {}, "phases": {},
                              "redis_layout": {"cluster": bool(self.cluster), "stream_shards": self.keys.shards}}
        self.today = self.started.replace(hour=0, minute=0, second=0, microsecond=0)

    # -- setup ----------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env.update({
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PORT": str(self.port),
            "PATH": f"{venv_bin}:{env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            # The catch-up phase builds a 1.2M backlog on purpose: backpressure must not refuse it.
            "BACKLOG_LIMIT": str(max(10_000_000, 4 * self.size.backlog)),
            "STREAM_SHARDS": str(self.args.stream_shards or (8 if self.cluster else 1)),
        })
        if self.cluster:
            env["REDIS_CLUSTER_URL"] = self.cluster.url
        return env

    def day_base(self, days_ago: int) -> float:
        """Return the epoch time of UTC midnight ``days_ago`` days before today (a phase's own day)."""
        return (self.today - timedelta(days=days_ago)).timestamp()

    def prepare_stores(self) -> None:
        """Create a fresh database (dropping an old bench one) and empty Redis db 13."""
        if self.redis.connection_pool.connection_kwargs.get("db", 0) == 0:
            raise SystemExit("refusing to flush Redis db 0: give --redis-url with another db")
        server = make_conninfo(self.args.server_url, dbname="postgres")
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.args.database)))
        self.redis.flushdb()
        if self.cluster:
            self.cluster.flush()
        started = time.perf_counter()
        result = release(self.settings)
        log(f"== database {self.args.database} created and migrated in {time.perf_counter() - started:.1f}s "
            f"({result['partitions_created']} partitions); Redis {self.redis_url} flushed")

    def make_keys(self) -> None:
        """Create an admin key (no limit the bench comes near) and a device key for every meter and vehicle."""
        from web.keys import KeySpec, create_keys

        started = time.perf_counter()
        devices = [("meter", fleet.meter_id(i)) for i in range(self.size.devices)]
        devices += [("vehicle", fleet.vehicle_id(i)) for i in range(self.size.devices)]
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            self.admin_token = create_keys(conn, [KeySpec("bench admin", ("admin",),
                                                          rate_limit="1000000000/minute")])[0]["token"]
            # Device keys keep the default limit of their kind (DEVICE_KEY_RATE_LIMIT): a turn sends
            # each device a few readings a minute, as a live fleet would send one.
            created = create_keys(conn, [KeySpec(f"bench {kind} {device}", ("ingest", "read"), (kind, device))
                                         for kind, device in devices])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device_tokens_file.write_text(json.dumps({k["device"]["id"]: k["token"] for k in created}))
        log(f"== {len(created):,} device keys and an admin key created in {time.perf_counter() - started:.1f}s")

    def engine_command(self, role: str) -> str:
        """Return the command of a Procfile role: under honcho as `make run` runs it (default), or bare."""
        if self.args.launcher == "honcho":
            # honcho relays the process's output line by line, as under `make run`; its CPU counts in the role's.
            return f"honcho start --no-colour --procfile Procfile --port {self.port} {role}"
        return procfile_commands()[role]

    def unguarded_command(self) -> str:
        """Return the command of the engine without access control, launched as the engine's web is (honcho or not).

        Both sides of the access-control turns must differ only by the key check and the rate limits,
        not by what relays their output.
        """
        command = 'gunicorn --config gunicorn.conf.py "bench.unguarded_app:app"'
        if self.args.launcher != "honcho":
            return command
        procfile = self.run_dir / "Procfile.unguarded"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        procfile.write_text(f"unguarded: {command}\n")
        return f"honcho start --no-colour --procfile {procfile} --port {self.unguarded_port} unguarded"

    def start_engine(self) -> None:
        """Start web, workers and scheduler from the Procfile and wait until they work."""
        self.processes.start("web", self.engine_command("web"))
        for _ in range(self.args.workers):
            self.processes.start("worker", self.engine_command("worker"))
        # The rollup maintenance in its own process, so that its CPU is measured apart from the drain's.
        self.processes.start("rollups", self.engine_command("rollups"))
        self.processes.start("scheduler", self.engine_command("scheduler"))
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.port}/healthz"), 60, "gunicorn to answer /healthz")
        self.wait_for_drains()
        log(f"== engine up ({self.args.launcher}): gunicorn on :{self.port}, {self.args.workers} rq workers, "
            "rq cron scheduler")

    def start_workers(self) -> None:
        """Start the Procfile's worker process ``--workers`` times."""
        command = self.engine_command("worker")
        for _ in range(self.args.workers):
            self.processes.start("worker", command)

    def wait_for_drains(self) -> None:
        """Wait until every worker runs a drain job (the scheduler kicks them every 2 s)."""
        def running() -> bool:
            self.check_alive()
            return all(self.redis.exists(drain_slot_heartbeat_key(slot)) for slot in range(self.args.workers))
        wait_until(running, 90, "the drain jobs to start", interval=0.2)

    def check_alive(self) -> None:
        """Fail fast when an engine process died."""
        dead = self.processes.dead()
        if dead:
            tail = dead[0].log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{dead[0].role} exited with {dead[0].proc.returncode}; its log ends:\n{tail}")

    # -- helpers --------------------------------------------------------------------------------

    def loadgen(self, label: str, spec: dict, port: int | None = None) -> dict:
        """Run the load generator in its own process and return its summary (with its CPU time)."""
        spec = {"url": f"http://127.0.0.1:{port or self.port}", "label": label, "token": self.admin_token, **spec}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_before = psutil.cpu_times()
        roles_before = {**self.processes.cpu_seconds(), **server_cpu_seconds()}
        proc = subprocess.run(
            [sys.executable, "-m", "bench.loadgen"], input=json.dumps(spec), capture_output=False,
            stdout=subprocess.PIPE, text=True, cwd=ROOT, env=self.env, check=False,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed for {label} (exit {proc.returncode})")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        roles_after = {**self.processes.cpu_seconds(), **server_cpu_seconds()}
        cpu = {role: round(roles_after[role] - roles_before.get(role, 0.0), 2) for role in roles_after}
        cpu["loadgen"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
        result["cpu_s"] = cpu
        result["machine_cpu_busy_pct"] = _busy_pct(cpu_before, psutil.cpu_times())
        web = cpu.get({self.bare_port: "bare", self.unguarded_port: "unguarded"}.get(port, "web"))
        if web is not None and result["requests"]:
            result["web_cpu_us_per_request"] = round(web / result["requests"] * 1e6, 1)
        self.check_alive()
        return result

    def _wait_for_zero(self, label: str, timeout: float, count: Callable[[], int], what: str,
                       interval: float) -> float:
        """Poll ``count`` until it is 0 (printing it once a second); return the time it was."""
        deadline = time.monotonic() + timeout
        last_print = 0.0
        while True:
            left = count()
            now = time.monotonic()
            if left == 0:
                return time.time()
            if now > deadline:
                raise TimeoutError(f"{label}: {left} {what} after {timeout:.0f}s")
            if now - last_print >= 1.0:
                self.check_alive()
                log(f"  [{label}] {left:>10,} {what}")
                last_print = now
            time.sleep(interval)

    def wait_drained(self, label: str, timeout: float) -> float:
        """Wait until every stream entry is committed and acknowledged; return the time it happened."""
        return self._wait_for_zero(label, timeout, lambda: undrained(self.data, self.keys),
                                   "stream entries not yet committed", 0.02)

    def wait_folded(self, label: str, timeout: float) -> None:
        """Wait until the rollup maintenance has folded every dirty mark: a phase's fold must not run into the next."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            self._wait_for_zero(label, timeout, lambda: conn.execute("SELECT count(*) FROM rollup_marks").fetchone()[0],
                                "rollup marks not yet folded", 0.1)

    def wait_settled(self, label: str, timeout: float) -> None:
        """Wait until every entry is committed and every mark folded: the next phase starts on an idle engine."""
        self.wait_drained(label, timeout)
        self.wait_folded(label, timeout)

    def wait_vacuumed(self, label: str) -> None:
        """Wait for the rollups worker's next VACUUM of the marks (every ROLLUP_VACUUM_SECONDS).

        A backlog's fold leaves a dead mark per device and drain batch (1.2M after the catch-up); their
        VACUUM is that backlog's cost, not the steady load's that follows it.
        """
        if not self.settings.rollup_vacuum_seconds:
            return
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            since = conn.execute("SELECT now()").fetchone()[0]
            def vacuumed() -> bool:
                self.check_alive()
                last = conn.execute("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'rollup_marks'"
                                    ).fetchone()[0]
                return last is not None and last > since
            log(f"  [{label}] waiting for the rollups worker's VACUUM of the folded marks")
            wait_until(vacuumed, 3 * self.settings.rollup_vacuum_seconds + 60, "the rollups worker's VACUUM",
                       interval=0.5)

    def count_rows(self, first: float, last: float) -> int:
        """Count history rows of both streams with ``first <= ts < last``."""
        with psycopg.connect(self.database_url) as conn:
            a = datetime.fromtimestamp(first, UTC)
            b = datetime.fromtimestamp(last, UTC)
            meters = conn.execute("SELECT count(*) FROM meter_readings WHERE ts >= %s AND ts < %s", (a, b)).fetchone()
            vehicles = conn.execute(
                "SELECT count(*) FROM vehicle_readings WHERE ts >= %s AND ts < %s", (a, b)).fetchone()
        return meters[0] + vehicles[0]

    def readings_span(self, readings: int, base: float) -> tuple[float, float]:
        """Return the time range that ``readings`` fleet readings from ``base`` cover."""
        minutes = readings // (2 * self.size.devices) + 1
        return base, base + minutes * 60

    def figure(self, key: str, **values) -> None:
        """Record one figure of the table."""
        self.results["figures"][key] = values

    # -- phases ---------------------------------------------------------------------------------

    def phase_copy_floor(self) -> None:
        """Floor 1: raw staged COPY rows/s, one connection and one per drain worker."""
        log("== floor: raw COPY through staging tables into the partitioned history")
        size = self.size
        runs = []
        for i, connections in enumerate(sorted({1, max(1, self.args.workers)})):
            base = self.day_base(40 - i)
            cpu_before = psutil.cpu_times()
            result = copy_floor(self.database_url, size.floor_rows, self.settings.drain_batch_size, size.devices,
                                base, connections)
            result["machine_cpu_busy_pct"] = _busy_pct(cpu_before, psutil.cpu_times())
            log(f"  [copy floor] {connections} connection(s): {result['rows_per_s']:,.0f} rows/s")
            runs.append(result)
        best = max(runs, key=lambda r: r["rows_per_s"])
        self.results["phases"]["copy_floor"] = runs
        self.figure("copy_floor", value=best["rows_per_s"], unit="rows/s", busy_pct=best["machine_cpu_busy_pct"],
                    note=f"batch {best['batch']}, {best['connections']} connection(s), "
                         f"machine {best['machine_cpu_busy_pct']:g}% busy")

    def phase_bare_floor(self) -> None:
        """Floor 2: start the bare Flask endpoint on the same gunicorn settings; measure what a GET costs."""
        log("== floor: bare Flask endpoint (parse JSON, answer 202) on the same gunicorn settings")
        env_port = self.env["PORT"]
        self.processes.env = {**self.env, "PORT": str(self.bare_port)}
        # It keeps running: its saturation turns alternate with the engine's (phase_single_ingest).
        self.bare = self.processes.start("bare", 'gunicorn --config gunicorn.conf.py "bench.bare_app:app"')
        self.processes.env = {**self.env, "PORT": str(self.unguarded_port)}
        self.unguarded = self.processes.start("unguarded", self.unguarded_command())
        self.processes.env = {**self.env, "PORT": env_port}
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.bare_port}/healthz"), 60, "the bare app")
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.unguarded_port}/healthz"), 60, "the unguarded app")
        # The latency floor of any read: one client, a GET that touches nothing.
        read = self.loadgen("bare read floor", {
            "mode": "closed", "concurrency": 1, "duration": 600, "requests": self.size.latest_requests,
            "workload": {"kind": "get", "paths": ["/healthz"]},
        }, port=self.bare_port)
        self.results["phases"]["bare_read_floor"] = read
        self.figure("bare_read_floor", p50=read["latency_ms"]["p50"], p99=read["latency_ms"]["p99"], unit="ms",
                    note="GET /healthz of the bare app, one client: what HTTP alone costs a read")

    def saturation_spec(self, base: float, turn: int) -> dict:
        """Return the closed-loop single-reading spec of one saturation turn, shared by the floor and the engine."""
        size = self.size
        # The first turn meets freshly started processes (connections, scripts, lazy imports): it
        # gets the longer warm-up.
        warmup = size.warmup_s if turn == 0 else size.round_warmup_s
        return {"mode": "closed", "concurrency": size.concurrency, "duration": warmup + size.saturation_s,
                "warmup": warmup, "device_tokens_file": str(self.device_tokens_file),
                "workload": {"kind": "ingest", "batch": 1, "devices": size.devices, "base_ts": base}}

    def phase_single_ingest(self) -> None:
        """Single-reading ingest: saturation req/s in turns with the bare floor, then p50/p99 at 500 req/s."""
        size = self.size
        rounds = size.saturation_rounds
        log(f"== single-reading ingest at saturation: {rounds} turns each: bare floor, engine (device keys, "
            f"rate limits), engine without access control")
        bare_runs, engine_runs, unguarded_runs = [], [], []
        self.wait_settled("before the saturation turns", 600)
        for i in range(rounds):
            # Each turn writes its own readings: a fresh hour of the fleet on the phase's day, later than
            # every turn before it, as a live fleet's readings come (a turn's hour before an earlier turn's
            # would send the rollup fold down its late-data path). Each turn starts once the one before is
            # drained and folded, so that no side pays for the other's backlog.
            bare_runs.append(self.loadgen(f"bare floor {i + 1}/{rounds}",
                                          self.saturation_spec(self.day_base(35) + i * 3600, i),
                                          port=self.bare_port))
            # The engine, and the same load and keys (sent, not checked) on the same Redis and drain without
            # access control; which of the two goes first alternates from round to round.
            sides = [(engine_runs, f"single ingest {i + 1}/{rounds}", None),
                     (unguarded_runs, f"single ingest, no access control {i + 1}/{rounds}", self.unguarded_port)]
            for n, (runs, label, port) in enumerate(sides if i % 2 == 0 else sides[::-1]):
                runs.append(self.loadgen(label, self.saturation_spec(self.day_base(34) + (2 * i + n) * 3600, i),
                                         port=port))
                self.wait_settled("single ingest drain", 600)
        self.processes.stop(self.bare)
        self.processes.stop(self.unguarded)
        bare, engine, unguarded = _turns(bare_runs), _turns(engine_runs), _turns(unguarded_runs)
        self.results["phases"]["single_saturation_unguarded"] = unguarded
        costs = [1 - e / u for e, u in zip(engine["turns_ok_per_s"], unguarded["turns_ok_per_s"], strict=True) if u]
        self.figure("single_ingest_unguarded", value=unguarded["ok_per_s"], unit="req/s",
                    note="; ".join(filter(None, [f"median of {rounds} turns: {unguarded['turns_ok_per_s']}",
                                                 _failures(unguarded)])))
        self.figure("access_control_cost", value=round(statistics.median(costs), 3) if costs else None, unit="share",
                    note=f"1 - engine / engine without access control, per turn: "
                         f"{', '.join(f'{c:.1%}' for c in costs)}; median")
        self.results["phases"]["bare_floor"] = bare
        self.results["phases"]["single_saturation"] = engine
        turns_note = f"median of {rounds} turns: {bare['turns_ok_per_s']}"
        self.figure("bare_floor", value=bare["ok_per_s"], unit="req/s",
                    note="; ".join(filter(None, [turns_note, _failures(bare)])))
        ratios = [f"{e / b:.0%}" for e, b in zip(engine["turns_ok_per_s"], bare["turns_ok_per_s"], strict=True)]
        shares = ", ".join(f"{name} {us:g}" for name, us in engine["cpu_us_per_request"].items() if us >= 1)
        bare_shares = ", ".join(f"{name} {us:g}" for name, us in bare["cpu_us_per_request"].items() if us >= 1)
        cpu_note = (f"median of {rounds} turns, each against the bare turn before it: {', '.join(ratios)}; "
                    f"CPU us a request, engine: {shares}; bare app: {bare_shares}")
        self.figure("single_ingest", value=engine["ok_per_s"], unit="req/s",
                    note="; ".join(filter(None, [cpu_note, _failures(engine)])))
        if self.args.only == "single-ingest":
            return  # only the saturation turns: the A/B of access control
        log(f"== single-reading ingest at a fixed {size.fixed_rate:g} req/s")
        result = self.loadgen("fixed rate", {
            "mode": "rate", "rate": size.fixed_rate, "duration": size.fixed_rate_s, "warmup": size.warmup_s,
            "connections": 256, "device_tokens_file": str(self.device_tokens_file),
            "workload": {"kind": "ingest", "batch": 1, "devices": size.devices, "base_ts": self.day_base(33)},
        })
        self.results["phases"]["single_fixed_rate"] = result
        self.figure("single_latency", p50=result["latency_ms"]["p50"], p99=result["latency_ms"]["p99"], unit="ms",
                    rate=result["ok_per_s"], note=_failures(result))
        self.wait_settled("fixed rate drain", 600)

    def phase_batched(self) -> None:
        """Batched ingest: accepted readings/s, and end-to-end readings/s until committed."""
        size = self.size
        log(f"== batched ingest: {size.batched_readings:,} readings, {size.batch} a request")
        # Settled and vacuumed, as after the single-ingest phase of a full run: in `--only drain` the COPY
        # floor's 2M marks would otherwise be folded, and their dead rows left, during the phase.
        self.wait_settled("before the batched ingest", 1800)
        self.wait_vacuumed("before the batched ingest")
        base = self.day_base(32)
        roles_before = {**self.processes.cpu_seconds(), **server_cpu_seconds()}
        backends = fleet_analytics.BackendCpu(self.database_url).start()
        result = self.loadgen("batched ingest", {
            "mode": "closed", "concurrency": size.batched_concurrency, "duration": 3600,
            "requests": size.batched_readings // size.batch,
            "workload": {"kind": "ingest", "batch": size.batch, "devices": size.devices, "base_ts": base,
                         "pregenerate": size.batched_readings // size.batch},
        })
        sent_done = time.time()
        committed_at = self.wait_drained("batched drain", 1800)
        roles_after = {**self.processes.cpu_seconds(), **server_cpu_seconds()}
        # Until the last commit: every role's CPU, and the Postgres backends' by application (drain vs rollups).
        result["cpu_s_to_commit"] = {role: round(roles_after[role] - roles_before.get(role, 0.0), 2)
                                     for role in roles_after}
        result["backend_cpu_s_to_commit"] = backends.stop()
        started_at = sent_done - result["elapsed_s"]
        first, last = self.readings_span(size.batched_readings, base)
        rows = self.count_rows(first, last)
        result.update(committed_at_s=round(committed_at - started_at, 3), rows_in_postgres=rows)
        self.results["phases"]["batched"] = result
        if rows != result["readings_ok"]:
            raise RuntimeError(f"batched ingest: {result['readings_ok']} readings accepted but {rows} rows committed")
        accepted_per_s = result["readings_ok"] / result["elapsed_s"]
        e2e = rows / (committed_at - started_at)
        self.figure("batched_accepted", value=round(accepted_per_s, 1), unit="readings/s", note=_failures(result))
        self.figure("batched_end_to_end", value=round(e2e, 1), unit="readings/s",
                    note=f"{rows:,} rows committed of {result['readings_ok']:,} accepted")
        self.wait_folded("batched rollups", 600)

    def rollup_cpu(self) -> Callable[[], tuple[dict, dict, float, float]]:
        """Start measuring the rollups' CPU and the drain's (processes and Postgres backends); call to stop.

        The call returns (process seconds by role, backend seconds by application, rollups s, drain s).
        """
        before = self.processes.cpu_seconds()
        backends = fleet_analytics.BackendCpu(self.database_url).start()

        def stop() -> tuple[dict, dict, float, float]:
            backend_cpu, after = backends.stop(), self.processes.cpu_seconds()
            proc = {r: round(after.get(r, 0.0) - before.get(r, 0.0), 2) for r in ("worker", "rollups")}
            return (proc, backend_cpu, proc["rollups"] + backend_cpu.get("energy-rollups", 0.0),
                    proc["worker"] + backend_cpu.get("energy-engine", 0.0))

        return stop

    def phase_steady(self) -> None:
        """Drain lag p50/p99 with 10,000 meters and 10,000 vehicles reporting once a minute."""
        size = self.size
        rate = 2 * size.devices / 60
        log(f"== steady load: {2 * size.devices:,} devices once a minute ({rate:.0f} readings/s) for "
            f"{size.steady_s:g}s after {size.steady_warmup_s:g}s unmeasured, drain lag from the stream's ids")
        spec = {"mode": "rate", "rate": rate, "connections": 64, "device_tokens_file": str(self.device_tokens_file),
                "workload": {"kind": "ingest_now", "batch": 1, "devices": size.devices}}
        # A live fleet has reported before: the warm-up gives every device a recent reading, so that the
        # measured part folds as a running deployment does (a device's first fold after a long silence
        # looks further back for its baseline; `rollups_cold` in the results).
        self.wait_settled("before the steady load", 600)
        self.wait_vacuumed("before the steady load")
        cold = self.rollup_cpu()
        self.loadgen("steady load warm-up", {**spec, "duration": size.steady_warmup_s})
        self.wait_settled("steady warm-up", 600)
        cold_proc, cold_backends, cold_rollups, cold_drain = cold()
        cold_share = cold_rollups / (cold_drain or 1)
        self.results["phases"]["rollups_cold"] = {"process_s": cold_proc, "backend_s": cold_backends,
                                                  "share": round(cold_share, 3)}
        monitor = LagMonitor(self.data, keys=self.keys).start()
        measured = self.rollup_cpu()
        self.rss.begin_mark("steady")
        result = self.loadgen("steady load", {**spec, "duration": size.steady_s})
        self.wait_drained("steady drain", 600)
        time.sleep(0.05)  # one more poll of the monitor after the last ack
        monitor.stop()
        # Rollup maintenance at steady load against the drain: each side's process and Postgres backends.
        self.wait_folded("steady rollups", 600)
        proc, backend_cpu, rollup_cpu, drain_cpu = measured()
        self.results["phases"]["rollup_cpu"] = {"process_s": proc, "backend_s": backend_cpu}
        self.figure("rollup_cpu_share", value=round(rollup_cpu / drain_cpu, 3) if drain_cpu else None, unit="",
                    note=f"rollups {rollup_cpu:.1f} s CPU (process {proc['rollups']} s) vs drain {drain_cpu:.1f} s "
                         f"(process {proc['worker']} s), backends sampled by application_name; in the warm-up "
                         f"minute (every device's first fold after a month) {cold_share:.0%}")
        self.results["worker_rss_steady"] = self.rss.end_mark("steady").get("worker", 0)
        lags, missing = monitor.lags()
        ms = {f"p{q}": round(percentile(lags, q) * 1000, 1) if lags else None for q in (50, 90, 99)}
        ms["max"] = round(max(lags) * 1000, 1) if lags else None
        result.update(lag_ms=ms, lag_samples=len(lags), lag_missing=missing)
        self.results["phases"]["steady"] = result
        self.figure("drain_lag", p50=ms["p50"], p99=ms["p99"], unit="ms",
                    note=f"{len(lags):,} readings at {result['ok_per_s']:.0f}/s" + (
                        f", {missing} not seen" if missing else ""))

    def phase_catch_up(self) -> None:
        """Catch-up: stop the workers, build a backlog of one hour of the fleet, start them, time the drain."""
        size = self.size
        log(f"== catch-up: workers stopped, backlog of {size.backlog:,} readings")
        self.processes.stop_role("worker")
        base = self.day_base(31)
        result = self.loadgen("backlog ingest", {
            "mode": "closed", "concurrency": size.batched_concurrency, "duration": 3600,
            "requests": size.backlog // size.batch,
            "workload": {"kind": "ingest", "batch": size.batch, "devices": size.devices, "base_ts": base,
                         "pregenerate": size.backlog // size.batch},
        })
        self.results["phases"]["backlog_ingest"] = result
        self.figure("batched_accepted_no_drain", value=round(result["readings_ok"] / result["elapsed_s"], 1),
                    unit="readings/s", note=_failures(result))
        self.batched_bound(result)
        backlog_entries = undrained(self.data, self.keys)
        backlog = result["readings_ok"]  # one stream entry holds a request's readings of one shard
        log(f"  backlog of {backlog:,} readings in {backlog_entries:,} stream entries; "
            f"starting {self.args.workers} worker(s)")
        self.rss.begin_mark("catch_up")
        roles_before = {**self.processes.cpu_seconds(), **server_cpu_seconds()}
        backends = fleet_analytics.BackendCpu(self.database_url).start()
        started = time.time()
        self.start_workers()
        first_progress = None
        last_print = 0.0
        while True:
            left = undrained(self.data, self.keys)
            now = time.time()
            if first_progress is None and left < backlog_entries:
                first_progress = now
            if left == 0:
                break
            if now - started > 1800:
                raise TimeoutError(f"catch-up: {left} readings still undrained after 30 min")
            if now - last_print >= 1:
                self.check_alive()
                rate = ((backlog_entries - left) / (now - first_progress) if first_progress and now > first_progress
                        else 0)
                log(f"  [catch-up] {now - started:6.1f}s  {left:>10,} entries left  {rate:>10,.0f} entries/s")
                last_print = now
            time.sleep(0.02)
        done = time.time()
        roles_after = {**self.processes.cpu_seconds(), **server_cpu_seconds()}
        backend_cpu = backends.stop()
        cpu = {role: round(roles_after[role] - roles_before.get(role, 0.0), 2) for role in roles_after}
        peaks = self.rss.end_mark("catch_up")
        first_progress = first_progress or started
        first, last = self.readings_span(size.backlog, base)
        rows = self.count_rows(first, last)
        drain_s = done - first_progress
        if rows != backlog:
            raise RuntimeError(f"catch-up: a backlog of {backlog} readings left {rows} rows in Postgres")
        self.results["phases"]["catch_up"] = {
            "backlog": backlog, "rows_in_postgres": rows, "drain_s": round(drain_s, 3),
            "startup_s": round(first_progress - started, 3), "worker_peak_rss": peaks.get("worker", 0),
            # CPU seconds per role from the workers' start to an empty backlog (the rollups fold runs meanwhile).
            "cpu_s": cpu, "backend_cpu_s": {k: round(v, 2) for k, v in backend_cpu.items()},
        }
        self.results["worker_rss_catch_up"] = peaks.get("worker", 0)
        self.figure("catch_up", value=round(backlog / drain_s, 1), unit="readings/s",
                    note=f"{backlog:,} in {drain_s:.1f}s (+{first_progress - started:.1f}s worker start), "
                         f"{rows:,} rows")

    def batched_bound(self, ingest_alone: dict) -> None:
        """Record the most end-to-end readings/s this machine allows: ingest alone plus the COPY floor.

        End to end, every reading costs the machine what ingest alone costs it (HTTP, validation,
        Redis; measured with the workers stopped) plus at least what the raw COPY floor costs it, on
        the same cores. Each cost is the phase's busy share of the machine divided by its rate, so a
        phase that left the machine partly idle is not charged for the idle part.
        """
        floor = self.results["figures"].get("copy_floor", {})
        if not floor.get("value") or not ingest_alone.get("readings_ok"):
            return
        ingest_rate = ingest_alone["readings_ok"] / ingest_alone["elapsed_s"]
        ingest_busy, floor_busy = ingest_alone["machine_cpu_busy_pct"] / 100, floor["busy_pct"] / 100
        bound = 1 / (ingest_busy / ingest_rate + floor_busy / floor["value"])
        self.figure("batched_bound", value=round(bound, 1), unit="readings/s",
                    note=f"ingest alone {ingest_rate:,.0f} readings/s at {ingest_busy:.0%} of the machine, "
                         f"then COPY {floor['value']:,.0f} rows/s at {floor_busy:.0%}")

    def phase_analytics(self) -> None:
        """Analytics latency for random vehicles with a day of the fleet loaded."""
        size = self.size
        rows = size.history_devices * size.history_minutes
        log(f"== analytics: loading {rows:,} rows per stream ({size.history_devices:,} devices x "
            f"{size.history_minutes} minutes) straight into Postgres")
        self.history_end = datetime.now(UTC).replace(second=0, microsecond=0)
        loaded = load_history(self.database_url, size.history_devices, size.history_minutes, end=self.history_end)
        self.results["phases"]["history_load"] = loaded
        log(f"  loaded in {loaded['load_s']}s, vacuum analyze {loaded['vacuum_s']}s")
        # The day's rollups before any read is measured (the rebuild, timed), as a deployment that upgraded would.
        fleet_analytics.build(self, self.settings)
        rng = random.Random(3)
        sample = rng.sample(range(size.history_devices), min(size.analytics_vehicles, size.history_devices))
        for i in sample:
            status, body = _http("POST", f"http://127.0.0.1:{self.port}/v1/mappings", self.admin_token,
                                 {"vehicleId": fleet.vehicle_id(i), "meterId": fleet.meter_id(i)})
            if status not in (200, 201):
                self.figure("analytics", unit="ms", unavailable=f"POST /v1/mappings answered {status}: {body[:200]}")
                return
        paths = [f"/v1/analytics/performance/{fleet.vehicle_id(i)}?hours=24" for i in sample]
        status, body = _http("GET", f"http://127.0.0.1:{self.port}{paths[0]}", self.admin_token)
        self.results["phases"]["analytics_example"] = {"status": status, "body": _json_or_text(body)}
        if status != 200:
            self.figure("analytics", unit="ms", unavailable=f"GET {paths[0]} answered {status}: {body[:200]}")
            return
        result = self.loadgen("analytics", {
            "mode": "closed", "concurrency": 1, "duration": 600, "requests": size.analytics_requests,
            "warmup": 0, "workload": {"kind": "get", "paths": paths},
        })
        self.results["phases"]["analytics"] = result
        self.figure("analytics", p50=result["latency_ms"]["p50"], p95=result["latency_ms"]["p95"], unit="ms",
                    note=f"{rows:,} rows/stream loaded, {len(sample)} vehicles; " + _failures(result))
        log("== history API: pages, hourly buckets, CSV of a day")
        history_phase.run(self, self.history_end, sample)
        log("== fleet analytics: fleet summary, ranking, 30-day window")
        fleet_analytics.run(self, self.settings)

    def phase_latest(self) -> None:
        """Latest-state reads: one vehicle, and 1,000 vehicles in one request."""
        size = self.size
        log("== latest-state reads")
        candidates = [fleet.vehicle_id(i) for i in range(size.devices)]
        pipe = self.data.pipeline(transaction=False)
        for vid in candidates:
            pipe.exists(self.keys.latest(VEHICLE, vid))
        known = [vid for vid, there in zip(candidates, pipe.execute(), strict=True) if there]
        if not known:
            self.figure("latest_one", unit="ms", unavailable="no vehicle has a latest state")
            return
        rng = random.Random(5)
        paths = [f"/v1/vehicles/{vid}/latest" for vid in rng.sample(known, min(2000, len(known)))]
        result = self.loadgen("latest one", {
            "mode": "closed", "concurrency": 1, "duration": 600, "requests": size.latest_requests,
            "workload": {"kind": "get", "paths": paths},
        })
        self.results["phases"]["latest_one"] = result
        self.figure("latest_one", p50=result["latency_ms"]["p50"], p99=result["latency_ms"]["p99"], unit="ms",
                    note=_failures(result))
        ids = min(size.multi_ids, len(known))
        # 1,000 ids do not fit gunicorn's 8190-byte request line: the multi-read takes them in a POST body.
        posts = [["/v1/vehicles/latest", json.dumps({"ids": rng.sample(known, ids)})] for _ in range(50)]
        status, body = _http("POST", f"http://127.0.0.1:{self.port}{posts[0][0]}", self.admin_token,
                             json.loads(posts[0][1]))
        if status != 200:
            self.results["phases"]["latest_multi_example"] = {"status": status, "body": body[:500]}
            self.figure("latest_multi", unit="ms", unavailable=f"POST /v1/vehicles/latest ({ids} ids) answered "
                                                               f"{status}: {body[:160]}")
            return
        result = self.loadgen("latest multi", {
            "mode": "closed", "concurrency": 1, "duration": 600, "requests": size.multi_requests,
            "workload": {"kind": "post", "posts": posts},
        })
        self.results["phases"]["latest_multi"] = result
        self.figure("latest_multi", p50=result["latency_ms"]["p50"], p99=result["latency_ms"]["p99"], unit="ms",
                    note=f"{ids} ids a request; " + _failures(result))

    def record_memory(self) -> None:
        """Record the peak RSS of web and worker, and whether the worker's grew with the backlog."""
        peak = self.rss.peak_process
        tree = self.rss.peak_tree
        self.figure("rss_web", value=round(peak.get("web", 0) / MIB, 1), unit="MiB",
                    note=f"largest gunicorn process; all {tree.get('web', 0) / MIB:.0f} MiB")
        self.figure("rss_worker", value=round(peak.get("worker", 0) / MIB, 1), unit="MiB",
                    note=f"largest worker or work horse; all {tree.get('worker', 0) / MIB:.0f} MiB")
        steady = self.results.get("worker_rss_steady", 0)
        catch_up = self.results.get("worker_rss_catch_up", 0)
        if steady and catch_up:
            self.figure("rss_worker_growth", steady=round(steady / MIB, 1), backlog=round(catch_up / MIB, 1),
                        ratio=round(catch_up / steady, 3), unit="MiB")

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> dict:
        """Run every phase; always stop the processes and write the results."""
        self.results["machine"] = machine_info(self.database_url, self.redis)
        self.results["started"] = self.started.isoformat()
        failed = True
        try:
            self.prepare_stores()
            self.make_keys()
            self.rss.start()
            if self.args.only == "analytics":
                self.start_engine()
            elif self.args.only == "single-ingest":
                self.phase_bare_floor()
                self.start_engine()
                self.phase_single_ingest()
            elif self.args.only == "steady":
                self.start_engine()
                self.phase_steady()
            elif self.args.only == "drain":
                self.phase_copy_floor()
                self.start_engine()
                self.phase_batched()
                self.phase_catch_up()
            else:
                self.phase_copy_floor()
                self.phase_bare_floor()
                self.start_engine()
                self.phase_single_ingest()
                self.phase_batched()
                # Each phase's readings are newer than the phase's before, as a deployment's are.
                self.phase_catch_up()
                self.phase_steady()
            if self.args.only not in ("single-ingest", "steady", "drain"):
                self.phase_analytics()
                self.phase_latest()
                self.record_memory()
            failed = False
        finally:
            self.rss.stop()
            self.processes.stop_all()
            # Times XINFO GROUPS said lag 0 while undelivered entries existed (see drain_monitor.undrained).
            self.results["lag_misreports"] = {"count": len(LAG_MISREPORTS), "first": LAG_MISREPORTS[:3]}
            self.results["finished"] = datetime.now(UTC).isoformat()
            self.results["wall_s"] = round((datetime.now(UTC) - self.started).total_seconds(), 1)
            self.write_results()
            if failed:
                log(f"the run failed: database {self.args.database} and {self.redis_url} are kept for a look")
            elif not self.args.keep:
                self.drop_stores()
            if self.cluster:
                self.cluster.stop()
        return self.results

    def write_results(self) -> None:
        """Write the JSON results and the table next to the process logs."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rows = report.table_rows(self.results)
        self.results["table"] = rows
        (self.run_dir / "results.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.run_dir / "table.md").write_text(report.markdown(rows, self.results))
        latest = self.out_dir / f"latest-{self.size.name}.json"
        latest.write_text(json.dumps(self.results, indent=2, default=str))

    def drop_stores(self) -> None:
        """Drop the bench database and empty Redis db 13."""
        server = make_conninfo(self.args.server_url, dbname="postgres")
        try:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.args.database)))
            self.redis.flushdb()
        except (psycopg.Error, redis.RedisError) as exc:
            log(f"cleanup failed: {exc}")


def _busy_pct(before, after) -> float:
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    return round(100 * (1 - idle / total), 1) if total > 0 else 0.0


def _turns(runs: list[dict]) -> dict:
    """Summarise the saturation turns of one side: the median rate, every turn's rate, each process's CPU a request."""
    requests = sum(r["requests"] for r in runs)
    return {
        "ok_per_s": round(statistics.median(r["ok_per_s"] for r in runs), 1),
        "turns_ok_per_s": [round(r["ok_per_s"]) for r in runs],
        "requests": requests,
        "ok": sum(r["ok"] for r in runs),
        "statuses": dict(sum((Counter(r["statuses"]) for r in runs), Counter())),
        "first_failure": next((r["first_failure"] for r in runs if r.get("first_failure")), None),
        # Every process's share, the servers included: where the machine's time per request went.
        "cpu_us_per_request": {
            name: round(sum(r["cpu_s"].get(name, 0.0) for r in runs) / requests * 1e6, 1)
            for name in sorted({name for r in runs for name in r["cpu_s"]})
        } if requests else {},
        "turns": runs,
    }


def _failures(result: dict) -> str:
    failed = result["requests"] - result["ok"]
    if not failed:
        return ""
    return f"{failed:,} failed: {result.get('first_failure') or result.get('statuses')}"[:200]


def _http(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _json_or_text(body: str):
    try:
        return json.loads(body)
    except ValueError:
        return body[:500]


def machine_info(database_url: str, client: redis.Redis) -> dict:
    """Describe the machine and servers the run used."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = make_conninfo(database_url, dbname="postgres")
    try:
        with psycopg.connect(server) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error:
        pg = "?"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                            check=False).stdout.strip()
    return {
        "cpu": cpu, "cores": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(), "python": platform.python_version(), "postgres": pg,
        "redis": client.info("server").get("redis_version"), "commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--server-url", default=os.environ.get("BENCH_DATABASE_SERVER",
                                                               "postgresql://127.0.0.1:5432/postgres"),
                        help="a Postgres server to create the bench database on")
    parser.add_argument("--database", default="energy_bench", help="the database to (re)create")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
                        help="a Redis db the bench may flush (never db 0)")
    parser.add_argument("--workers", type=int, default=2, help="rq worker processes")
    parser.add_argument("--launcher", choices=("honcho", "direct"), default="honcho",
                        help="run the engine's processes under honcho, as `make run` does (default), or directly")
    parser.add_argument("--history-devices", type=int, help="devices per stream in the analytics day")
    parser.add_argument("--history-minutes", type=int, help="minutes of history per device (1440 = a day)")
    parser.add_argument("--backlog", type=int, help="readings in the catch-up backlog")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="start a private 3-master + 3-replica Redis Cluster for the data (REDIS_CLUSTER_URL); "
                             "RQ stays on --redis-url")
    parser.add_argument("--stream-shards", type=int, help="STREAM_SHARDS (default 1; 8 with --redis-cluster)")
    parser.add_argument("--out-dir", default=str(ROOT / "bench-results"))
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis data afterwards")
    parser.add_argument("--only", choices=["analytics", "single-ingest", "steady", "drain"],
                        help="run only these phases (analytics: the analytics, history and latest reads, on a loaded "
                             "day; single-ingest: the saturation turns of the bare floor, the engine and the engine "
                             "without access control; steady: the live fleet's drain lag and rollup maintenance CPU; "
                             "drain: the COPY floor, batched ingest end to end and the catch-up)")
    parser.add_argument("--saturation-rounds", type=int, help="turns of each side in the single-ingest saturation")
    parser.add_argument("--saturation-seconds", type=float, help="seconds each saturation turn measures")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    overrides = {k: v for k, v in {"history_devices": args.history_devices, "history_minutes": args.history_minutes,
                                   "backlog": args.backlog, "saturation_rounds": args.saturation_rounds,
                                   "saturation_s": args.saturation_seconds}.items() if v is not None}
    size = replace(size, **overrides)
    bench = Bench(args, size)
    results = bench.run()
    print(report.markdown(results["table"], results))
    log(f"results: {bench.run_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

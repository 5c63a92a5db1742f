"""Bench phase of the fleet analytics (issue 15): rollups of the loaded day, fleet summary, ranking, 30-day window."""

from __future__ import annotations

import random
import time

import psycopg

from bench import fleet
from common.settings import Settings

FLEET_REQUESTS = 300  # per figure (a third at the smoke size)


def build_rollups(bench, settings: Settings) -> dict:
    """Map every loaded vehicle to its meter and build the loaded day's rollups with the rebuild; time it.

    The load's dirty marks are dropped first: the rebuild covers every reading of the day (the load
    is the only writer at this point), and folding a whole day of 20,000 devices through the
    maintenance job would measure a backfill, not the steady state.
    """
    from scheduler.rollups import rebuild

    devices = bench.size.history_devices
    with psycopg.connect(bench.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM rollup_marks")
        conn.execute(
            "INSERT INTO vehicle_meter_map (vehicle_id, meter_id) SELECT v, m FROM unnest(%s::text[], %s::text[]) "
            "AS x(v, m) ON CONFLICT (vehicle_id) DO UPDATE SET meter_id = EXCLUDED.meter_id",
            ([fleet.vehicle_id(i) for i in range(devices)], [fleet.meter_id(i) for i in range(devices)]))
    end = bench.history_end
    started = time.monotonic()
    result = rebuild(settings, (end.date().fromordinal(end.date().toordinal() - 1)), end.date())
    result["seconds"] = round(time.monotonic() - started, 1)
    with psycopg.connect(bench.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE meter_hourly_rollups")
        conn.execute("VACUUM ANALYZE vehicle_hourly_rollups")
    return result


def build(bench, settings: Settings) -> None:
    """Build the loaded day's rollups (right after the load, before the analytics are measured) and record it."""
    built = build_rollups(bench, settings)
    bench.results["phases"]["rollups_rebuild"] = built
    bench.figure("rollups_rebuild", seconds=built["seconds"], unit="s",
                 note=f"{bench.size.history_devices:,} devices per stream x {bench.size.history_minutes} minutes")


def run(bench, settings: Settings) -> None:
    """Measure each figure with one closed-loop client (the rollups were built by build())."""
    rng = random.Random(15)
    vehicles = [fleet.vehicle_id(i) for i in rng.sample(range(bench.size.history_devices),
                                                         min(200, bench.size.history_devices))]
    requests = FLEET_REQUESTS if bench.size.name == "full" else FLEET_REQUESTS // 3
    figures = {
        "fleet_summary": ["/v1/analytics/fleet?hours=24"],
        "fleet_ranking": ["/v1/analytics/vehicles?hours=24&sort=efficiency&order=asc&limit=50"],
        "vehicle_30d": [f"/v1/analytics/performance/{v}?hours=720" for v in vehicles],
    }
    for key, paths in figures.items():
        result = bench.loadgen(key, {
            "mode": "closed", "concurrency": 1, "duration": 600, "requests": requests,
            "warmup": 0, "workload": {"kind": "get", "paths": paths},
        })
        bench.results["phases"][key] = result
        failed = result["requests"] - result["ok"]
        note = f"{bench.size.history_devices:,} vehicles mapped, a day loaded"
        if failed:
            note += f"; {failed:,} failed: {result.get('first_failure') or result.get('statuses')}"[:200]
        bench.figure(key, p50=result["latency_ms"]["p50"], p95=result["latency_ms"]["p95"], unit="ms", note=note)


class BackendCpu:
    """Sample the CPU of Postgres backends by application_name (drain: energy-engine; rollups: energy-rollups).

    Backends come and go with their jobs (a drain or rollup job reconnects every 30 s), so each one's
    /proc/<pid>/stat is read every ``interval`` and its growth is summed per application; a backend's
    last fraction of a second before it exits may be missed.
    """

    def __init__(self, database_url: str, interval: float = 0.5):
        import threading

        self.database_url = database_url
        self.interval = interval
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        import os

        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _loop(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                for pid, app in conn.execute("SELECT pid, application_name FROM pg_stat_activity "
                                             "WHERE application_name IN ('energy-engine', 'energy-rollups')"):
                    cpu = self._cpu(pid)
                    if cpu is None:
                        continue
                    self.first.setdefault(pid, (app, cpu))
                    self.last[pid] = cpu
                self._stop.wait(self.interval)

    def start(self) -> BackendCpu:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Stop sampling; return the CPU seconds per application seen while sampling."""
        self._stop.set()
        self._thread.join()
        out: dict[str, float] = {}
        for pid, (app, cpu) in self.first.items():
            out[app] = out.get(app, 0.0) + self.last[pid] - cpu
        return out

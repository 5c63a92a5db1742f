# Run: PYTHONPATH=. .venv/bin/python bench/rollups_ab_drain.py  (a fresh database each run: change its name)
"""A/B on one machine, same run, taking turns: drain batch write with the marking trigger on vs off,
and the in-order fold's time against the drain write of the same readings (steady-load shape:
one new reading per device per batch). Postgres backend CPU from /proc/<pid>/stat of each connection."""

import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg

from common.database import release
from common.settings import Settings
from scheduler import rollups
from workers.history_writer import HistoryWriter

s = Settings.from_env({"DATABASE_URL": "postgresql://root@127.0.0.1:5432/energy_bench_15_drain2"})
release(s)
clk = 100.0


def cpu(pid):  # utime + stime of a backend, seconds
    with open(f"/proc/{pid}/stat") as stat:
        f = stat.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / clk


w = psycopg.connect(s.database_url)
writer = HistoryWriter(w)
wpid = w.info.backend_pid
m = psycopg.connect(s.database_url, autocommit=True, prepare_threshold=0, options="-c jit=off")
mpid = m.info.backend_pid
base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=20)
DEV = 2500


def batch(minute):
    ts = (base + timedelta(minutes=minute)).isoformat()
    return {
        "m": [f"m{d}\t{ts}\t{minute * 0.5 + d}\t230.0" for d in range(DEV)],
        "v": [f"v{d}\t{ts}\t50.0\t{minute * 0.4 + d}\t25.0" for d in range(DEV)],
    }


on, off, fold = [], [], []
minute = 0
for turn in range(16):
    for trig in (True, False) if turn % 2 else (False, True):
        minute += 1
        b = batch(minute)
        w.execute("SET session_replication_role = " + ("origin" if trig else "replica"))
        w.commit()
        c0, t0 = cpu(wpid), time.perf_counter()
        writer.write(b)
        (on if trig else off).append((time.perf_counter() - t0, cpu(wpid) - c0))
        if trig:
            c0, t0 = cpu(mpid), time.perf_counter()
            rollups.maintain(s, 0, conn=m)
            fold.append((time.perf_counter() - t0, cpu(mpid) - c0, on[-1][1]))
def med(xs, i):
    return round(statistics.median(x[i] for x in xs) * 1000, 1)
print(
    f"drain batch of {2 * DEV} readings (1 per device): trigger off wall {med(off, 0)} ms cpu {med(off, 1)} ms; "
    f"on wall {med(on, 0)} ms cpu {med(on, 1)} ms"
)
print(
    f"fold of those {2 * DEV} devices: wall {med(fold, 0)} ms, backend cpu {med(fold, 1)} ms; "
    f"fold cpu / drain-with-trigger cpu = "
    f"{round(statistics.median(f[1] for f in fold) / statistics.median(f[2] for f in fold), 2)}"
)

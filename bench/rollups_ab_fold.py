# Run: PYTHONPATH=. .venv/bin/python bench/rollups_ab_fold.py DBNAME OLD_SQL_DIR
# (a fresh database each run; OLD_SQL_DIR holds the previous meter_append.sql / vehicle_append.sql)
"""A/B on one machine, same run, taking turns: the in-order fold with one counter_steps() call per
device (old) vs one counter_steps_batch() pass (new), against the drain write of the same readings
(steady-load shape: one new reading per device per batch). Backend CPU from /proc/<pid>/stat."""

import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from common import database
from common.database import release
from common.settings import Settings
from scheduler import rollups
from workers.history_writer import HistoryWriter

s = Settings.from_env({"DATABASE_URL": f"postgresql://root@127.0.0.1:5432/{sys.argv[1]}"})
old_dir = Path(sys.argv[2])
release(s)
real_load_sql = database.load_sql
variant = {"old": False}


def load_sql(name):
    if variant["old"] and name in ("rollups/meter_append", "rollups/vehicle_append"):
        return (old_dir / f"{name.split('/')[1]}.sql").read_text()
    return real_load_sql(name)


rollups.load_sql = load_sql


def cpu(pid):
    with open(f"/proc/{pid}/stat") as stat:
        f = stat.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0


w = psycopg.connect(s.database_url)
writer = HistoryWriter(w)
wpid = w.info.backend_pid
conns = {k: psycopg.connect(s.database_url, autocommit=True, prepare_threshold=0, options="-c jit=off")
         for k in ("old", "new")}
base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=20)
DEV = 2500
drain, fold = [], {"old": [], "new": []}
for minute in range(1, 25):
    ts = (base + timedelta(minutes=minute)).isoformat()
    c0 = cpu(wpid)
    writer.write({"m": [f"m{d}\t{ts}\t{minute * 0.5 + d}\t230.0" for d in range(DEV)],
                  "v": [f"v{d}\t{ts}\t50.0\t{minute * 0.4 + d}\t25.0" for d in range(DEV)]})
    drain.append(cpu(wpid) - c0)
    which = ("old", "new")[minute % 2]
    variant["old"] = which == "old"
    m = conns[which]
    c0, t0 = cpu(m.info.backend_pid), time.perf_counter()
    rollups.maintain(s, 0, conn=m)
    if minute > 4:  # the first turns: no frontier yet, prepared statements planning
        fold[which].append((time.perf_counter() - t0, cpu(m.info.backend_pid) - c0, drain[-1]))
for which, xs in fold.items():
    wall = statistics.median(x[0] for x in xs) * 1000
    cpu_ms = statistics.median(x[1] for x in xs) * 1000
    ratio = statistics.median(x[1] / x[2] for x in xs if x[2])
    print(f"{which}: fold of {2 * DEV} devices wall {wall:.1f} ms, backend cpu {cpu_ms:.1f} ms, "
          f"fold cpu / drain cpu = {ratio:.2f} (drain cpu median {statistics.median(drain) * 1000:.1f} ms)")

# Run: PYTHONPATH=. .venv/bin/python bench/rollups_ab_reads.py  (creates the database energy_bench_15_ab)
"""A/B: one vehicle's performance, raw path vs rollups+edges, 24 h and 30 d windows (30 days of minute readings)."""

import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg

from common.database import release
from common.settings import Settings
from scheduler import rollups
from web.analytics import fetch_window, window_params
from web.rollup_reads import fetch_performance

s = Settings.from_env({"DATABASE_URL": "postgresql://root@127.0.0.1:5432/energy_bench_15_ab"})
release(s)
conn = psycopg.connect(s.database_url, autocommit=True, options="-c TimeZone=UTC")
now = datetime.now(UTC).replace(second=0, microsecond=0)
if not conn.execute("SELECT count(*) FROM vehicle_meter_map").fetchone()[0]:
    for d in range(5):
        conn.execute(
            """INSERT INTO meter_readings SELECT %s, t, extract(epoch from t)/3600*10, 230
            FROM generate_series(%s::timestamptz - interval '30 days', %s, interval '1 minute') t""",
            (f"m{d}", now, now),
        )
        conn.execute(
            """INSERT INTO vehicle_readings SELECT %s, t, 50, extract(epoch from t)/3600*9, 25
            FROM generate_series(%s::timestamptz - interval '30 days', %s, interval '1 minute') t""",
            (f"v{d}", now, now),
        )
        conn.execute("INSERT INTO vehicle_meter_map (vehicle_id, meter_id) VALUES (%s, %s)", (f"v{d}", f"m{d}"))
    conn.execute("VACUUM ANALYZE")
    t0 = time.monotonic()
    rollups.maintain(s, 0)
    print("fold of 5+5 devices x 30 days:", round(time.monotonic() - t0, 1), "s")
    conn.execute("VACUUM ANALYZE")
to = now - timedelta(minutes=7, seconds=13)
res = {}
for hours in (24, 720):
    a, b = [], []
    for i in range(60):
        v = f"v{i % 5}"
        t = time.perf_counter()
        fetch_window(conn, window_params(v, 'm' + v[1:], to - timedelta(hours=hours), to, s))
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        fetch_performance(conn, v, 'm' + v[1:], to - timedelta(hours=hours), to, s)
        b.append(time.perf_counter() - t)
    def q(x):
        return (round(statistics.median(x) * 1000, 2), round(statistics.quantiles(x, n=20)[18] * 1000, 2))
    print(f"{hours} h: raw median/p95 ms {q(a)}  rollups+edges median/p95 ms {q(b)}")

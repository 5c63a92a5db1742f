"""CSV export streams from a COPY: a gunicorn worker's memory stays flat for 100,000 rows."""

import csv
import io
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.processes import Process, descendants, free_port, port_answers, process_env, wait_for

ROWS = 100_000
START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=ROWS + 60)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def key_headers(request) -> dict:
    """The bearer key of an admin when the identity layer exists (its `admin_token` fixture), else none."""
    try:
        return {"Authorization": f"Bearer {request.getfixturevalue('admin_token')}"}
    except pytest.FixtureLookupError:
        return {}


@pytest.fixture
def web(settings, db, redis_client, tmp_path):
    port = free_port()
    env = {**process_env(settings.database_url, settings.redis_url, port), "WEB_CONCURRENCY": "1"}
    process = Process("web", env, tmp_path)
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
        worker = wait_for(lambda: descendants(process.popen.pid), 10, message="the gunicorn worker")
    except AssertionError:
        process.stop()
        raise AssertionError(process.output()) from None
    yield port, worker[0]
    process.stop()


def download(port: int, limit_minutes: int, on_chunk, headers: dict) -> bytes:
    to = (START + timedelta(minutes=limit_minutes)).isoformat().replace("+", "%2B")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/vehicles/v1/readings?to={to}",
                                     headers={"Accept": "text/csv", **headers})
    chunks = []
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        while chunk := response.read(64 * 1024):
            chunks.append(chunk)
            on_chunk()
    return b"".join(chunks)


def test_a_100000_row_csv_streams_in_flat_memory(web, db, key_headers):
    port, worker = web
    db.execute("INSERT INTO vehicle_readings SELECT 'v1', %s + n * interval '1 minute', n %% 100, n * 0.01, 25"
               " FROM generate_series(0, %s - 1) n", (START, ROWS))
    # Warm up: the first request imports, connects and fills caches. Its peak is the baseline.
    peaks = {}
    for rows in (5_000, 5_000, ROWS):
        peak = [rss_bytes(worker)]
        body = download(port, rows, lambda peak=peak: peak.append(rss_bytes(worker)), key_headers)
        peaks.setdefault(rows, []).append(max(peak))
    parsed = list(csv.reader(io.StringIO(body.decode())))
    assert parsed[0] == ["vehicleId", "timestamp", "soc", "kwhDeliveredDc", "batteryTemp"]
    assert len(parsed) == ROWS + 1
    assert parsed[1][1] == START.isoformat() and parsed[-1][1] == (START + timedelta(minutes=ROWS - 1)).isoformat()
    growth = peaks[ROWS][0] - peaks[5_000][-1]
    print(f"worker RSS peak: {peaks[5_000][-1] / 2**20:.1f} MiB for 5,000 rows, {peaks[ROWS][0] / 2**20:.1f} MiB "
          f"for {ROWS:,} rows ({len(body) / 2**20:.1f} MiB of CSV)")
    # Held in memory, 100,000 rows would cost tens of MiB (the CSV alone is ~6 MiB, its tuples several times
    # that); streamed 2,000 rows at a time, the peak does not depend on the row count.
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"

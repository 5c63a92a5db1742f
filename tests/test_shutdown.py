"""Graceful shutdown with real processes: SIGTERM on a draining worker loses nothing; gunicorn finishes a request."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from common.streams import CONSUMER_GROUP, STREAM_KEY
from tests.conftest import meter, minutes_ago, vehicle
from tests.processes import Process, descendants, free_port, port_answers, process_env, wait_for

pytestmark = pytest.mark.e2e


def rows(db) -> int:
    return db.execute("SELECT (SELECT count(*) FROM meter_readings) + (SELECT count(*) FROM vehicle_readings)"
                      ).fetchone()[0]


def test_sigterm_mid_drain_finishes_the_batch_and_loses_nothing(settings, client, db, redis_client, tmp_path):
    sent = 0
    for b in range(20):
        batch = [meter(f"m{b}-{i}", ts=minutes_ago(1)) for i in range(250)]
        batch += [vehicle(f"v{b}-{i}", ts=minutes_ago(1)) for i in range(250)]
        assert client.post("/v1/telemetry", json=batch).status_code == 202
        sent += 500
    # Small batches and a long job: the SIGTERM lands in the middle of a drain job.
    # LOG_LEVEL=DEBUG: RQ's per-job lines, which this test reads, are routine chatter at INFO.
    env = process_env(settings.database_url, settings.redis_url, free_port(),
                      DRAIN_JOB_SECONDS="60", DRAIN_BATCH_SIZE="20", DRAIN_BLOCK_MS="200", LOG_LEVEL="DEBUG")
    scheduler = Process("scheduler", env, tmp_path)
    worker = Process("worker", env, tmp_path)
    try:
        wait_for(lambda: rows(db) > 0, 60, interval=0.01, message="the drain to start")
        worker.popen.send_signal(signal.SIGTERM)
        code = worker.popen.wait(30)
        written = rows(db)
        output = worker.output()
        assert code == 0, output[-3000:]
        assert written < sent, "the drain had finished before the SIGTERM; the test proves nothing"
        # The drain job ended by itself after committing and acknowledging its batch...
        assert "Successfully completed drain the telemetry stream" in output, output[-3000:]
        assert "ShutDownImminentException" not in output
        # ...so nothing is left half-done: every row in Postgres is acknowledged, nothing is pending.
        assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0
        # One stream entry per request (500 readings), the unread ones counted by the group's lag.
        assert written == sent - 500 * redis_client.xinfo_groups(STREAM_KEY)[0]["lag"]

        successor = Process("worker", env, tmp_path)
        try:
            wait_for(lambda: rows(db) == sent, 90, interval=0.1, message="every reading after the restart")
        finally:
            successor.stop()
        dupes = db.execute("SELECT count(*) - count(DISTINCT (meter_id, ts)) FROM meter_readings").fetchone()[0]
        assert dupes == 0
    finally:
        worker.stop()
        scheduler.stop()


def worker_holds_connection(master_pid: int, client_port: int) -> bool:
    """Tell whether a child of ``master_pid`` holds the server side of the TCP connection from ``client_port``."""
    inodes = set()
    for pid in descendants(master_pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == client_port and fields[9] in inodes:
            return True
    return False


def test_gunicorn_finishes_an_in_flight_request_on_sigterm(settings, db, redis_client, tmp_path, admin_token):
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port)
    env["WEB_CONCURRENCY"] = "1"  # one worker, serving already: it is the one that takes the request
    web = Process("web", env, tmp_path)
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
            assert response.status == 200
        body = json.dumps([meter(f"m{i}") for i in range(100)]).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + admin_token.encode() + b"\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            conn.sendall(body[:100])
            # Wait until the worker has accepted the connection: the request is then in flight.
            client_port = conn.getsockname()[1]
            wait_for(lambda: worker_holds_connection(web.popen.pid, client_port), 10, message="the worker to accept")
            web.popen.send_signal(signal.SIGTERM)
            wait_for(lambda: "Handling signal: term" in web.output(), 10, message="gunicorn to get the signal")
            conn.sendall(body[100:])
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 202"), response[:200]
        assert json.loads(response.split(b"\r\n\r\n", 1)[1]) == {"accepted": 100, "meters": 100, "vehicles": 0}
        [(_id, fields)] = redis_client.xrange(STREAM_KEY)  # one entry per request
        assert len(fields["m"].split("\n")) == 100
        assert web.popen.wait(30) == 0
    finally:
        if web.popen.poll() is None:
            web.stop()
        else:
            web.log.close()


def test_worker_exits_cleanly_on_sigterm_while_idle(settings, redis_client, tmp_path):
    env = process_env(settings.database_url, settings.redis_url, free_port(), LOG_LEVEL="DEBUG")  # RQ's own lines
    worker = Process("worker", env, tmp_path)
    try:
        wait_for(lambda: "Listening on" in worker.output(), 30, message="the worker to listen")
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(30) == 0
        assert "worker stopped" in worker.output()
    except subprocess.TimeoutExpired:
        raise AssertionError(worker.output()[-3000:]) from None
    finally:
        worker.stop()

"""Faults: Postgres down (ingest goes on, nothing lost), Redis down (503s; worker and scheduler wait and resume)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from common.streams import CONSUMER_GROUP, DEAD_LETTER_STREAM_KEY, STREAM_KEY
from tests.conftest import keyed_client, meter, minutes_ago, vehicle
from tests.processes import Process, free_port, process_env, wait_for
from tests.reliability.servers import PrivateRedis

CLOSED = "127.0.0.1:1"


class TcpForwarder:
    """Forward a local port to another address while "up"; while "down" nothing listens on the port."""

    def __init__(self, port: int, target: tuple[str, int]):
        self.port, self.target = port, target
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def counts(db) -> tuple[int, int]:
    return db.execute(
        "SELECT (SELECT count(*) FROM meter_readings), (SELECT count(*) FROM vehicle_readings)").fetchone()


def test_with_redis_down_ingest_and_latest_answer_503_json(settings, admin_token):
    from web import create_app

    app = create_app(dataclasses.replace(settings, redis_url=f"redis://{CLOSED}/0"))
    client = keyed_client(app, admin_token, cache_from=settings)
    for response in (client.post("/v1/telemetry", json=meter()), client.get("/v1/vehicles/v1/latest")):
        assert response.status_code == 503
        assert response.is_json
        assert response.get_json()["error"] == "redis_unavailable"
        assert response.headers["Retry-After"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.e2e
def test_postgres_down_ingest_goes_on_and_everything_lands_once_it_is_back(settings, client, db, redis_client,
                                                                           tmp_path):
    proxy_port = free_port()
    postgres_port = int(psycopg.conninfo.conninfo_to_dict(settings.database_url).get("port") or 5432)
    forwarder = TcpForwarder(proxy_port, ("127.0.0.1", postgres_port))
    env = process_env(make_conninfo(settings.database_url, port=str(proxy_port)), settings.redis_url, free_port(),
                      DRAIN_JOB_SECONDS="5", RECLAIM_IDLE_SECONDS="2", DRAIN_BLOCK_MS="200")
    worker, scheduler = Process("worker", env, tmp_path), Process("scheduler", env, tmp_path)
    try:
        sent = 0
        for b in range(10):
            batch = [meter(f"m{b}-{i}", ts=minutes_ago(1)) for i in range(20)]
            batch += [vehicle(f"v{b}-{i}", ts=minutes_ago(1)) for i in range(20)]
            assert client.post("/v1/telemetry", json=batch).status_code == 202  # Postgres is not needed
            sent += 20
        wait_for(lambda: "drain paused" in worker.output(), 60, message="the drain to meet the closed port")
        assert counts(db) == (0, 0)
        assert worker.popen.poll() is None and scheduler.popen.poll() is None

        forwarder.up()  # Postgres is back
        wait_for(lambda: counts(db) == (sent, sent), 90, interval=0.2, message="every reading in Postgres")
        wait_for(lambda: redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0, 30,
                 message="nothing pending")
        assert redis_client.xlen(DEAD_LETTER_STREAM_KEY) == 0
        assert worker.popen.poll() is None and scheduler.popen.poll() is None
    finally:
        worker.stop()
        scheduler.stop()
        forwarder.down()


@pytest.mark.e2e
def test_redis_down_worker_and_scheduler_wait_and_resume(settings, db, tmp_path, admin_token):
    from web import create_app

    server = PrivateRedis(tmp_path / "redis")
    server.start()
    redis_url = server.url(0)
    app = create_app(dataclasses.replace(settings, redis_url=redis_url))
    client = keyed_client(app, admin_token, cache_from=settings)
    env = process_env(settings.database_url, redis_url, free_port(),
                      DRAIN_JOB_SECONDS="5", RECLAIM_IDLE_SECONDS="2", DRAIN_BLOCK_MS="200")
    worker, scheduler = Process("worker", env, tmp_path), Process("scheduler", env, tmp_path)
    try:
        assert client.post("/v1/telemetry", json=[meter(f"a{i}", ts=minutes_ago(2)) for i in range(50)]).status_code \
            == 202
        wait_for(lambda: counts(db)[0] == 50, 60, interval=0.2, message="the first readings in Postgres")

        server.stop()  # Redis goes away
        response = client.post("/v1/telemetry", json=meter("lost"))
        assert response.status_code == 503 and response.get_json()["error"] == "redis_unavailable"
        wait_for(lambda: "redis unavailable; scheduler waits" in scheduler.output(), 60,
                 message="the scheduler to notice")
        # Long enough for RQ itself to give up on its loop (a drain job ends, its bookkeeping fails):
        # the worker process must wait for Redis instead of exiting.
        wait_for(lambda: "redis unavailable; worker waits" in worker.output(), 90, interval=0.2,
                 message="the worker to wait for Redis")
        assert worker.popen.poll() is None, worker.output()[-3000:]
        assert scheduler.popen.poll() is None, scheduler.output()[-3000:]

        server.start()  # Redis is back, with its data (AOF)
        assert client.post("/v1/telemetry", json=[meter(f"b{i}", ts=minutes_ago(1)) for i in range(50)]).status_code \
            == 202
        wait_for(lambda: counts(db)[0] == 100, 120, interval=0.2, message="the readings sent after the outage")
        with server.client() as c:
            wait_for(lambda: c.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0, 60, message="nothing pending")
        assert worker.popen.poll() is None, worker.output()[-3000:]
        assert scheduler.popen.poll() is None, scheduler.output()[-3000:]
    finally:
        worker.stop()
        scheduler.stop()
        server.stop()

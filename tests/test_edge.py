"""The hardened edge: nginx (deploy/nginx.conf) in front of the real gunicorn; gunicorn's own request limits.

Slow clients are held by nginx, never by gunicorn's threads, and closed within nginx's timeouts;
absurd requests get a JSON 4xx within a second, from gunicorn alone and through nginx.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request

import pytest

from tests.conftest import bearer, meter
from tests.edge import NGINX, Nginx, connect, read_response
from tests.processes import Process, free_port, port_answers, process_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")]

MAX_BYTES = 1024 * 1024
HEADER_TIMEOUT = BODY_TIMEOUT = 5.0  # client_header_timeout / client_body_timeout in deploy/nginx.conf
CONN_PER_ADDRESS = 20


@pytest.fixture(scope="module")
def web(settings, tmp_path_factory):
    """The Procfile's gunicorn on a free loopback port (module-wide: starting it costs seconds)."""
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port, MAX_REQUEST_BYTES=str(MAX_BYTES),
                      WEB_THREADS="4", LOG_LEVEL="WARNING")
    process = Process("web", env, tmp_path_factory.mktemp("web"))
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
    except AssertionError:
        process.stop()
        raise AssertionError(process.output()) from None
    process.port = port
    yield process
    process.stop()


@pytest.fixture(scope="module")
def edge(web, tmp_path_factory):
    """nginx with the repository's config in front of ``web``."""
    server = Nginx(tmp_path_factory.mktemp("nginx"), web.port, MAX_BYTES, CONN_PER_ADDRESS)
    server.start()
    yield server
    server.stop()


def test_the_config_passes_nginx_t(tmp_path):
    result = Nginx(tmp_path, free_port(), MAX_BYTES).check()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# -- slow clients -------------------------------------------------------------------------------------------------


class SlowClients:
    """Slowloris connections (a header line a second, never the end of the head) and body tricklers
    (a whole head, a few bytes of a large body, then silence); notes when nginx closes each."""

    def __init__(self, port: int, slowloris: int, tricklers: int, sources: list[str]):
        self.port = port
        self.conns: list[dict] = []
        for i in range(slowloris + tricklers):
            sock = connect(port, sources[i % len(sources)])
            kind = "slowloris" if i < slowloris else "trickler"
            if kind == "slowloris":
                sock.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: edge\r\n")
            else:
                sock.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 500000\r\n\r\n[{\"meterId\":")
            sock.setblocking(False)
            now = time.monotonic()
            self.conns.append({"sock": sock, "kind": kind, "opened": now, "last_sent": now, "closed": None,
                               "answer": b""})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, daemon=True)

    def start(self) -> SlowClients:
        self._thread.start()
        return self

    def _drive(self) -> None:
        n = 0
        while not self._stop.is_set() and any(c["closed"] is None for c in self.conns):
            for c in self.conns:
                if c["closed"] is not None:
                    continue
                try:
                    chunk = c["sock"].recv(4096)
                    if not chunk:
                        c["closed"] = time.monotonic()
                        continue
                    c["answer"] += chunk
                except BlockingIOError:
                    pass
                except OSError:
                    c["closed"] = time.monotonic()
                    continue
                if c["kind"] == "slowloris":
                    try:
                        c["sock"].send(f"X-Slow-{n}: {n}\r\n".encode())
                        c["last_sent"] = time.monotonic()
                    except BlockingIOError:
                        pass
                    except OSError:
                        c["closed"] = time.monotonic()
            n += 1
            self._stop.wait(1.0)

    def all_closed(self) -> bool:
        return all(c["closed"] is not None for c in self.conns)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.conns:
            c["sock"].close()


def _probe(port: int, i: int, token: str) -> tuple[int, float]:
    if i % 2:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/telemetry", method="POST",
                                         data=json.dumps(meter(f"probe-{i}")).encode(),
                                         headers={"Content-Type": "application/json", **bearer(token)})
    else:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.status, time.perf_counter() - started


def test_fifty_slowloris_and_fifty_tricklers_do_not_stop_the_service(edge, web, redis_client, admin_token):
    # The slow clients come from other loopback addresses than the probe, under the per-address cap.
    sources = [f"127.0.0.{i}" for i in range(2, 8)]
    slow = SlowClients(edge.port, slowloris=50, tricklers=50, sources=sources).start()
    try:
        answers = [_probe(edge.port, i, admin_token) for i in range(200)]
        statuses = sorted({status for status, _ in answers})
        latencies = sorted(seconds for _, seconds in answers)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"probe through nginx beside 100 slow clients: p50 {latencies[99] * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
        assert statuses == [200, 202], statuses
        assert p99 < 0.100, (p99, edge.output()[-3000:])

        try:
            wait_for(slow.all_closed, HEADER_TIMEOUT + BODY_TIMEOUT + 10, interval=0.2,
                     message="nginx to close every slow client")
        except AssertionError:
            raise AssertionError(edge.output()[-3000:]) from None
        for c in slow.conns:
            # A slowloris never finishes its head: closed client_header_timeout after it began. A trickler
            # went silent after its first bytes: closed client_body_timeout after them. (+2 s: the
            # driver's own 1 s tick, and a loaded machine.)
            held = c["closed"] - (c["opened"] if c["kind"] == "slowloris" else c["last_sent"])
            assert held < HEADER_TIMEOUT + 2.5, (c["kind"], held)
            if c["answer"]:
                assert c["answer"].startswith(b"HTTP/1.1 408"), c["answer"][:200]
    finally:
        slow.stop()
    # gunicorn saw none of them: none of their readings reached Redis, and it still answers directly.
    latest = redis_client.keys("latest:*")
    assert len(latest) == 100 and all(k.startswith("latest:meter:probe-") for k in latest)
    assert _probe(web.port, 0, admin_token)[0] == 200


def test_requests_in_progress_are_capped_per_address(edge, admin_token):
    holders = []
    try:
        refused = 0
        for _ in range(CONN_PER_ADDRESS + 5):
            sock = connect(edge.port, "127.0.0.9")
            sock.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n[")
            holders.append(sock)
        # nginx answers the refused ones at once; the others wait for their bodies. One deadline for
        # all (well within client_body_timeout, after which nginx resets the connections).
        deadline = time.monotonic() + 1.0
        for sock in holders:
            try:
                status, headers, body = read_response(sock, deadline)
            except TimeoutError:
                continue
            assert status == 429
            assert json.loads(body)["error"] == "too_many_connections"
            assert headers["retry-after"]
            refused += 1
        assert refused == 5
        # Another address is not affected.
        assert _probe(edge.port, 0, admin_token)[0] == 200
    finally:
        for sock in holders:
            sock.close()


# -- absurd requests ----------------------------------------------------------------------------------------------

LONG_LINE = b"GET /v1/vehicles/latest?ids=" + b",".join(b"vehicle-%05d" % i for i in range(2000)) + b" HTTP/1.1\r\n"
CASES = {
    "request line": LONG_LINE + b"Host: edge\r\n\r\n",
    "too many headers": b"GET /healthz HTTP/1.1\r\nHost: edge\r\n"
                        + b"".join(b"X-Many-%d: %d\r\n" % (i, i) for i in range(60)) + b"\r\n",
    "huge header": b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Huge: " + b"h" * 12000 + b"\r\n\r\n",
    "body": b"POST /v1/telemetry HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BYTES + 1) + b"[" + b" " * 65536,
    "chunked body": b"POST /v1/telemetry HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    + (b"10000\r\n" + b" " * 0x10000 + b"\r\n") * (MAX_BYTES // 0x10000 + 2) + b"0\r\n\r\n",
}


@pytest.mark.parametrize("target", ["gunicorn", "nginx"])
@pytest.mark.parametrize("case", list(CASES))
def test_absurd_requests_get_a_json_4xx_within_a_second(edge, web, target, case):
    port = web.port if target == "gunicorn" else edge.port
    sock = connect(port)
    started = time.monotonic()
    sender = threading.Thread(target=_send_quietly, args=(sock, CASES[case]), daemon=True)
    sender.start()
    try:
        status, headers, body = read_response(sock, started + 1.0)
    finally:
        sock.close()
        sender.join(2)
    elapsed = time.monotonic() - started
    assert 400 <= status < 500, (status, body[:300])
    assert headers["content-type"].startswith("application/json"), (status, headers, body[:300])
    answer = json.loads(body)
    assert answer["error"] and answer["message"], answer
    assert elapsed < 1.0, elapsed
    print(f"{target} {case}: {status} {answer['error']} in {elapsed * 1000:.0f} ms")


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send ``data``; the server may answer and close before it has read everything."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_nginx_answers_json_when_gunicorn_is_down(tmp_path):
    server = Nginx(tmp_path, free_port(), MAX_BYTES)  # nothing listens on the upstream port
    server.start()
    try:
        sock = connect(server.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Request-ID: edge-test-1\r\n\r\n")
        status, headers, body = read_response(sock, time.monotonic() + 5)
        sock.close()
    finally:
        server.stop()
    assert status == 502
    assert json.loads(body)["error"] == "bad_gateway"
    assert headers["x-request-id"] == "edge-test-1"


def test_nginx_passes_the_client_address_and_request_id(edge, web):
    request = urllib.request.Request(f"http://127.0.0.1:{edge.port}/healthz",
                                     headers={"X-Request-ID": "abc-123", "X-Forwarded-For": "6.6.6.6"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["X-Request-ID"] == "abc-123"  # the app saw and echoed nginx's header
    with urllib.request.urlopen(f"http://127.0.0.1:{edge.port}/healthz", timeout=5) as response:
        assert len(response.headers["X-Request-ID"]) == 32  # nginx's own $request_id

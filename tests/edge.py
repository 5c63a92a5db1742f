"""nginx with the repository's deploy/nginx.conf, run under a private prefix and port, for the edge tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.processes import ROOT, free_port, port_answers, wait_for

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
# The variables deploy/nginx.conf names; the official image's entrypoint substitutes the same ones.
TEMPLATE_VARIABLES = ("NGINX_PORT", "WEB_UPSTREAM", "MAX_REQUEST_BYTES", "NGINX_CONN_PER_ADDRESS")


def render(values: dict[str, str], destination: Path) -> Path:
    """Render deploy/nginx.conf with envsubst (as the nginx image does) into ``destination``."""
    shell_format = " ".join(f"${{{name}}}" for name in TEMPLATE_VARIABLES)
    env = {**os.environ, **values}
    text = subprocess.run(["envsubst", shell_format], input=NGINX_CONF.read_text(), env=env, text=True,
                          capture_output=True, check=True).stdout
    destination.write_text(text)
    return destination


class Nginx:
    """An nginx master with the repository's config under its own prefix (never the system service)."""

    def __init__(self, prefix: Path, upstream_port: int, max_request_bytes: int, conn_per_address: int = 20):
        self.prefix = prefix
        self.port = free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = render({"NGINX_PORT": str(self.port), "WEB_UPSTREAM": f"127.0.0.1:{upstream_port}",
                            "MAX_REQUEST_BYTES": str(max_request_bytes),
                            "NGINX_CONN_PER_ADDRESS": str(conn_per_address)}, prefix / "nginx.conf")
        self.log_path = prefix / "nginx.log"
        self.globals = f"daemon off; pid {prefix / 'nginx.pid'}; error_log {prefix / 'error.log'} info;"
        self.popen: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        """Return the nginx command line for this prefix and config."""
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-g", self.globals, *extra]

    def check(self) -> subprocess.CompletedProcess:
        """Run ``nginx -t`` on the rendered config."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        """Start nginx and wait until it listens."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - nginx keeps it; closed when the process ends
        self.popen = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            wait_for(lambda: port_answers(self.port), 15, message="nginx to listen")
        except AssertionError:
            raise AssertionError(self.output()) from None

    def output(self) -> str:
        """Return what nginx logged (its access lines and error log)."""
        parts = [p.read_text(errors="replace") for p in (self.log_path, self.prefix / "error.log") if p.exists()]
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop this nginx (its master, which stops its workers)."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    """Open a TCP connection to ``port`` from the loopback address ``source`` (all of 127/8 is local)."""
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_response(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (status, lower-cased headers, body) before ``deadline`` (monotonic)."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data[:200]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        body += chunk
    return status, headers, body

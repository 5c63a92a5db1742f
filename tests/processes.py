"""Start the Procfile's processes as real subprocesses for end-to-end tests, and clean them up."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_CHARS = 4000
# Processes started and not yet stopped: a wait that times out prints their log tails.
_RUNNING: list[Process] = []


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_commands() -> dict[str, str]:
    """Return the Procfile's process types and commands."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line:
            name, command = line.split(":", 1)
            commands[name.strip()] = command.strip()
    return commands


def descendants(pid: int) -> list[int]:
    """Return every live descendant of ``pid`` (an RQ work horse leaves the process group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Process:
    """One Procfile process started in its own session."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            ["bash", "-c", f"exec {procfile_commands()[name]}"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        _RUNNING.append(self)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process and all its descendants."""
        for pid in [self.popen.pid, *descendants(self.popen.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self, timeout: float = 15) -> None:
        """Ask politely (SIGTERM), then force."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill()
        self.popen.wait(5)
        self.log.close()
        if self in _RUNNING:
            _RUNNING.remove(self)

    def output(self) -> str:
        """Return what the process printed so far."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """Return the end of the process's log, headed by its name and exit status."""
        status = "running" if self.popen.poll() is None else f"exited {self.popen.returncode}"
        return f"--- {self.name} ({status}), last {chars} characters of {self.log_path} ---\n{self.output()[-chars:]}"


def process_env(database_url: str, redis_url: str, port: int, **extra: str) -> dict[str, str]:
    """Return the environment for the engine's processes."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PORT=str(port),
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        WEB_CONCURRENCY="2",
        **extra,
    )
    return env


def wait_for(condition, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Poll ``condition`` until it returns a truthy value or ``timeout`` seconds pass.

    On timeout the error carries the log tail of every process the test started and has not stopped.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(process.tail() for process in _RUNNING)
            raise AssertionError(f"timed out after {timeout}s waiting for {message}\n{tails}".rstrip())
        time.sleep(interval)


def port_answers(port: int) -> bool:
    """Tell whether something accepts connections on the port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0

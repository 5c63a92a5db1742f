"""Run the engine's real processes from the Procfile, kill them, and restart whatever dies on its own.

Each process runs its Procfile command (``bash -c "exec <command>"``) with the stack's environment,
so the suite exercises what production runs. Every process carries the marker variable
``RELIABILITY_RUN=<run id>`` in its environment; teardown finds stray children (an RQ work horse
left behind by a killed worker) by that marker and its own pids only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import descendants, procfile_commands

REPO = Path(__file__).resolve().parents[2]
RUN_MARKER = "RELIABILITY_RUN"
log = logging.getLogger(__name__)


def pids_with_marker(run_id: str) -> list[int]:
    """Return the pids whose environment carries ``RELIABILITY_RUN=<run_id>``."""
    marker = f"{RUN_MARKER}={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


def signal_pids(pids: list[int], sig: int) -> None:
    """Send ``sig`` to each pid, ignoring those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class ManagedProcess:
    """One running process of the stack."""

    role: str  # web, worker, scheduler
    name: str
    popen: subprocess.Popen
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class UnexpectedExit:
    """A process that ended without being asked to (the harness restarted it, like a platform would)."""

    role: str
    name: str
    returncode: int | None
    log_tail: str


class ProcessManager:
    """Start, stop and kill the stack's processes; a supervisor thread restarts any that die on their own."""

    def __init__(self, env: dict[str, str], log_dir: Path, run_id: str):
        self.env = {**os.environ, **env, RUN_MARKER: run_id, "PYTHONUNBUFFERED": "1"}
        venv_bin = str(Path(sys.executable).parent)
        self.env["PATH"] = f"{venv_bin}:{self.env.get('PATH', '/usr/bin:/bin')}"
        self.log_dir = log_dir
        self.run_id = run_id
        self.procfile = procfile_commands()
        self.processes: list[ManagedProcess] = []
        self.unexpected_exits: list[UnexpectedExit] = []
        self._counter = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- starting ------------------------------------------------------------------------------

    def run_release(self) -> str:
        """Run the Procfile's release step (migrations, partitions) and return its output."""
        done = subprocess.run(["bash", "-c", f"exec {self.procfile['release']}"], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"release failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, role: str) -> ManagedProcess:
        """Start one process of type ``role`` from the Procfile."""
        with self._lock:
            self._counter += 1
            name = f"{role}-{self._counter}"
            log_path = self.log_dir / f"{name}.log"
            log_file = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
            popen = subprocess.Popen(
                ["bash", "-c", f"exec {self.procfile[role]}"],
                cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log_file.close()
            process = ManagedProcess(role, name, popen, log_path)
            self.processes.append(process)
            return process

    def live(self, role: str | None = None) -> list[ManagedProcess]:
        """Return the live processes (of ``role``) the manager has not retired."""
        with self._lock:
            return [p for p in self.processes if not p.expected_exit and p.alive() and (role is None or p.role == role)]

    # -- stopping ------------------------------------------------------------------------------

    def retire(self, process: ManagedProcess) -> None:
        """Mark ``process`` as meant to end, so the supervisor does not restart it."""
        with self._lock:
            process.expected_exit = True

    def kill_tree(self, process: ManagedProcess, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to the process and all its descendants (an RQ horse has left its process group)."""
        self.retire(process)
        tree = [*descendants(process.pid), process.pid]
        signal_pids(tree, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(10)
        return tree

    def terminate(self, process: ManagedProcess, timeout: float = 30) -> int | None:
        """SIGTERM the process (a platform restart), wait for it, SIGKILL the tree past ``timeout``."""
        self.retire(process)
        process.popen.send_signal(signal.SIGTERM)
        try:
            return process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree(process)
            return None

    def stop_all(self, timeout: float = 20) -> None:
        """Stop the supervisor, SIGTERM every process, then SIGKILL whatever carries the run marker."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        with self._lock:
            running = [p for p in self.processes if p.alive()]
            for process in running:
                process.expected_exit = True
                with contextlib.suppress(ProcessLookupError):
                    process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.1, deadline - time.monotonic()))
        for _ in range(3):
            strays = pids_with_marker(self.run_id)
            if not strays:
                break
            signal_pids(strays, signal.SIGKILL)
            time.sleep(0.2)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(5)

    # -- supervision ---------------------------------------------------------------------------

    def supervise(self, interval: float = 0.5) -> None:
        """Start a thread that restarts any process that ended without being retired."""
        self._stop.clear()
        self._supervisor = threading.Thread(target=self._supervise, args=(interval,), name="supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                dead = [p for p in self.processes if not p.expected_exit and not p.alive()]
                for process in dead:
                    process.expected_exit = True
                    self.unexpected_exits.append(
                        UnexpectedExit(process.role, process.name, process.popen.returncode, process.log_tail())
                    )
                    log.warning("%s exited unexpectedly (%s); restarting", process.name, process.popen.returncode)
                    self.start(process.role)

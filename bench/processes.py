"""Start the engine's real processes from the Procfile, stop them, and sample their memory."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def procfile_commands(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """Return the Procfile's process types and their shell commands."""
    commands = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line:
            name, command = line.split(":", 1)
            commands[name.strip()] = command.strip()
    return commands


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until it holds; raise TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    """Tell whether ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Managed:
    """One started process (its own process group, so the whole tree can be signalled)."""

    role: str
    command: str
    proc: subprocess.Popen
    log_path: Path


@dataclass
class ProcessSet:
    """The processes of one benchmark run, all in their own process groups."""

    env: dict[str, str]
    log_dir: Path
    running: list[Managed] = field(default_factory=list)

    def start(self, role: str, command: str) -> Managed:
        """Start ``command`` with bash, its output going to a log file under ``log_dir``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{role}-{len(self.running)}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed when it exits
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        managed = Managed(role, command, proc, log_path)
        self.running.append(managed)
        return managed

    def of_role(self, role: str) -> list[Managed]:
        """Return the running processes of ``role``."""
        return [m for m in self.running if m.role == role and m.proc.poll() is None]

    def stop(self, managed: Managed, timeout: float = 20.0) -> None:
        """SIGTERM a process (its graceful path), then SIGKILL its group if it lingers."""
        if managed.proc.poll() is None:
            managed.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                managed.proc.wait(timeout)
        # Whatever is left of the group (an RQ work horse calls setpgrp, so kill it by pid too).
        for pid in [managed.proc.pid, *_descendants(managed.proc.pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        managed.proc.wait()
        self.running.remove(managed)

    def stop_role(self, role: str) -> None:
        """Stop every process of ``role``."""
        for managed in [m for m in self.running if m.role == role]:
            self.stop(managed)

    def stop_all(self) -> None:
        """Stop everything started, newest first."""
        for managed in reversed(list(self.running)):
            self.stop(managed)

    def cpu_seconds(self) -> dict[str, float]:
        """Return the CPU time (user + system) used so far by each role's processes, reaped children included."""
        out: dict[str, float] = {}
        for managed in list(self.running):
            try:
                total = _tree_cpu_seconds(psutil.Process(managed.proc.pid))
            except psutil.Error:
                continue
            out[managed.role] = out.get(managed.role, 0.0) + total
        return out

    def dead(self) -> list[Managed]:
        """Return the processes that exited on their own."""
        return [m for m in self.running if m.proc.poll() is not None]


def _tree_cpu_seconds(root: psutil.Process) -> float:
    """Return the CPU time of ``root``, its live descendants and the children each of them has reaped.

    A reaped child's time is in its parent's children_* only: an RQ worker under honcho reaps a work
    horse per job, and counting the root's reaped children alone lost every finished horse's time.
    """
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            c = process.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
    return total


def server_cpu_seconds() -> dict[str, float]:
    """Return the CPU time (user + system) the local Redis and PostgreSQL servers have used so far.

    Each server is a process tree under its own root (postmaster, redis-server); an exited child
    (a Postgres backend whose client left) is counted in its root's reaped-children times. A server
    this user may not read, or that runs elsewhere, is left out.
    """
    out: dict[str, float] = {}
    for p in psutil.process_iter(["name", "ppid"]):
        name = p.info["name"] or ""
        role = "postgres" if name == "postgres" else "redis" if name.startswith("redis-server") else None
        if role is None:
            continue
        try:
            if psutil.Process(p.info["ppid"]).name() == name:
                continue  # a child: counted with its root
            total = _tree_cpu_seconds(p)
        except psutil.Error:
            continue
        out[role] = out.get(role, 0.0) + total
    return out


def _process_trees(roots: dict[int, str]) -> dict[int, tuple[str, list[psutil.Process]]]:
    """Return each root pid's role and processes (the root and its descendants), from one scan of /proc."""
    children: dict[int, list[psutil.Process]] = {}
    for p in psutil.process_iter(["ppid"]):
        children.setdefault(p.info["ppid"], []).append(p)
    trees = {}
    for pid, role in roots.items():
        try:
            procs = [psutil.Process(pid)]
        except psutil.Error:
            continue
        for p in procs:  # grows as it goes: breadth first over the tree
            procs.extend(children.get(p.pid, ()))
        trees[pid] = (role, procs)
    return trees


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


class RssSampler:
    """Sample the resident memory of each role's process trees in a background thread."""

    def __init__(self, processes: ProcessSet, interval: float = 0.25, tree_refresh: float = 2.0):
        self.processes = processes
        self.interval = interval
        # Finding a tree's processes scans all of /proc (~1 ms per root here); done at every sample
        # it was a burst of CPU four times a second, which showed in the latency tails being
        # measured. Trees are found again every ``tree_refresh`` seconds, and when a root changes;
        # in between only each known process's RSS is read. (An RQ work horse lives for a whole
        # drain job, DRAIN_JOB_SECONDS, so it is seen long before it ends.)
        self.tree_refresh = tree_refresh
        self._trees: dict[int, tuple[str, list[psutil.Process]]] = {}  # root pid -> (role, processes)
        self._trees_at = -math.inf
        self.peak_process: dict[str, int] = {}  # role -> largest single process seen (bytes)
        self.peak_tree: dict[str, int] = {}  # role -> largest sum over the role's processes (bytes)
        self.marks: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> RssSampler:
        """Begin sampling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End sampling."""
        self._stop.set()
        self._thread.join()

    def sample(self) -> dict[str, tuple[int, int]]:
        """Return role -> (largest process RSS, total RSS) right now."""
        roots = {m.proc.pid: m.role for m in list(self.processes.running)}
        if roots.keys() != self._trees.keys() or time.monotonic() - self._trees_at >= self.tree_refresh:
            self._trees = _process_trees(roots)
            self._trees_at = time.monotonic()
        out: dict[str, tuple[int, int]] = {}
        for role, procs in self._trees.values():
            rss = []
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss.append(p.memory_info().rss)
            biggest, total = out.get(role, (0, 0))
            out[role] = (max([biggest, *rss]), total + sum(rss))
        return out

    def begin_mark(self, name: str) -> None:
        """Start tracking the peak per-process RSS of each role under ``name`` (e.g. one phase)."""
        with self._lock:
            self.marks[name] = {}

    def end_mark(self, name: str) -> dict[str, int]:
        """Stop tracking ``name`` and return its peaks."""
        with self._lock:
            return self.marks.pop(name, {})

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            now = self.sample()
            with self._lock:
                for role, (biggest, total) in now.items():
                    self.peak_process[role] = max(self.peak_process.get(role, 0), biggest)
                    self.peak_tree[role] = max(self.peak_tree.get(role, 0), total)
                    for peaks in self.marks.values():
                        peaks[role] = max(peaks.get(role, 0), biggest)

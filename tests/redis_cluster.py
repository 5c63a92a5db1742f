"""A private Redis Cluster of Debian's redis-server: 3 masters + 3 replicas on free loopback ports.

Used by the tests (a session fixture), the reliability suite's cluster chaos run and the
benchmark's ``--redis-cluster``. Each node has its own directory (config, AOF, log); the cluster
is formed with ``redis-cli --cluster create`` and is ready when every node says ``cluster_state:ok``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

# A master that stops answering is replaced by its replica after about this long (ms).
NODE_TIMEOUT_MS = 2000


def _free_ports(n: int) -> list[int]:
    """Return ``n`` free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def available() -> bool:
    """Tell whether redis-server and redis-cli are installed."""
    return bool(shutil.which("redis-server") and shutil.which("redis-cli"))


class RedisClusterNodes:
    """Six redis-server processes forming one cluster, in ``root``."""

    def __init__(self, root: Path, masters: int = 3, replicas_per_master: int = 1, appendfsync: str = "everysec",
                 min_replicas_to_write: int = 0):
        self.root = Path(root)
        self.masters = masters
        self.replicas_per_master = replicas_per_master
        self.appendfsync = appendfsync
        self.min_replicas_to_write = min_replicas_to_write
        self.ports = _free_ports(masters * (1 + replicas_per_master))
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """Return a ``redis://`` URL of one node (REDIS_CLUSTER_URL)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node_dir(self, port: int) -> Path:
        return self.root / f"node-{port}"

    def log(self, port: int) -> Path:
        return self.node_dir(port) / "redis.log"

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on ``port`` with its config; it rejoins with its nodes.conf."""
        directory = self.node_dir(port)
        directory.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendonly", "yes",
                "--appendfsync", self.appendfsync, "--save", "", "--logfile", str(self.log(port)),
                "--protected-mode", "no", "--daemonize", "no", "--min-replicas-to-write",
                str(self.min_replicas_to_write), "--min-replicas-max-lag", "10"]
        self.processes[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def start(self, timeout: float = 60) -> None:
        """Start every node, form the cluster, wait until it serves every slot."""
        for port in self.ports:
            self.start_node(port)
        for port in self.ports:
            self._wait(lambda p=port: self.node(p).ping(), timeout, f"node {port} to answer")
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        done = subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas",
                               str(self.replicas_per_master), "--cluster-yes"],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}\n{self.logs()}")
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 60) -> None:
        """Wait until every running node reports ``cluster_state:ok`` and every replica is in sync with its master."""
        def ok() -> bool:
            for port, process in self.processes.items():
                if process.poll() is not None:
                    continue
                info = self.node(port).execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info:
                    return False
                replication = self.node(port).info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            return True

        self._wait(ok, timeout, "the cluster to be ok")

    def node(self, port: int) -> redis.Redis:
        """Return a plain client of one node."""
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2,
                           socket_connect_timeout=2)

    def client(self, **kwargs) -> RedisCluster:
        """Return a cluster client."""
        return RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True, **kwargs)

    def masters_now(self) -> list[int]:
        """Return the ports of the running masters."""
        ports = []
        for port, process in self.processes.items():
            if process.poll() is None:
                with contextlib.suppress(redis.RedisError):
                    if self.node(port).info("replication")["role"] == "master":
                        ports.append(port)
        return ports

    def replicas_of(self, master_port: int) -> list[int]:
        """Return the ports of the running replicas of a master."""
        info = self.node(master_port).info("replication")
        return [int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]

    def master_of_slot(self, slot: int) -> int:
        """Return the port of the master serving ``slot`` now."""
        for port in self.masters_now():
            for start, end, master, *_replicas in self.node(port).execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(slot)

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a node (SIGKILL: gone; SIGSTOP: frozen, SIGCONT: thawed)."""
        os.kill(self.processes[port].pid, sig)
        if sig == signal.SIGKILL:
            self.processes[port].wait(10)

    def flush(self) -> None:
        """Empty every master (the tests' reset; this cluster is private)."""
        for port in self.masters_now():
            with contextlib.suppress(redis.ReadOnlyError):
                self.node(port).flushall()

    def logs(self, lines: int = 40) -> str:
        """Return the tail of every node's log (printed when something fails)."""
        out = []
        for port in self.ports:
            with contextlib.suppress(OSError):
                tail = self.log(port).read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- redis node {port} ---\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """Kill every node (a private cluster: nothing to keep)."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)  # a frozen node must be able to die
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)

    def _wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except (redis.RedisError, OSError) as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout} s for {what} (last error: {last})\n{self.logs()}")

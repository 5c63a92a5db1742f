"""Fixtures of the reliability suite: private PostgreSQL and Redis servers, stacks of real processes.

The suite is opt-in: plain ``pytest`` (``make test``) skips collecting it; ``make test-reliability``
sets ``RELIABILITY_SUITE=1``, and naming the directory or a file on the command line runs it too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.reliability.report import REPORT, results_dir
from tests.reliability.servers import PrivatePostgres, PrivateRedis
from tests.reliability.stack import Stack

HERE = Path(__file__).resolve().parent


def _asked_for(config: pytest.Config) -> bool:
    if os.environ.get("RELIABILITY_SUITE") == "1":
        return True
    for arg in config.invocation_params.args:
        path = Path(config.invocation_params.dir, str(arg).split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    """Leave the suite out of a plain ``pytest`` run (it takes minutes and starts its own servers)."""
    if collection_path.name.startswith("test_") and not _asked_for(config):
        return True
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the summary table once, after every test, and keep a copy next to the logs."""
    if not REPORT.rows:
        return
    path = REPORT.write(results_dir())
    terminalreporter.section("reliability summary")
    for line in REPORT.render().splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {path}; process logs in {results_dir() / 'logs'})")


@pytest.fixture(scope="session")
def run_id() -> str:
    """A marker for every process this run starts."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def log_dir() -> Path:
    """Where the processes' logs go; emptied at the start of a run, kept after it."""
    path = results_dir() / "logs"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def private_servers(log_dir):
    """A private PostgreSQL cluster and a private Redis (AOF, fsync always) in a temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="reliability-"))
    root.chmod(0o755)  # the cluster runs as the postgres user when the suite runs as root
    pg = PrivatePostgres(root / "pg")
    redis_server = PrivateRedis(root / "redis")
    try:
        pg.init()
        pg.start()
        redis_server.start()
        yield pg, redis_server
    finally:
        redis_server.stop()
        pg.stop("immediate")
        for log_file in (pg.log_file, redis_server.log_file):
            if log_file.exists():
                shutil.copy(log_file, log_dir / log_file.name)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def make_stack(private_servers, run_id, log_dir):
    """Return a factory of stacks (database + Redis db + processes); each is stopped at the end of the module."""
    pg, redis_server = private_servers
    stacks: list[Stack] = []

    def factory(name: str, redis_db: int, knobs: dict[str, str] | None = None) -> Stack:
        redis_server.client(redis_db).flushdb()
        pg.drop_database(f"energy_{name}")
        stack = Stack(pg, redis_server, f"energy_{name}", redis_db, log_dir / name, run_id, knobs)
        stack.release()
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()

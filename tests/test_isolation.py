"""Two test sessions at once on one machine: each claims its own empty Redis db and database, touches nothing else."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from common.embedded_servers import EmbeddedPostgres, EmbeddedServerError, EmbeddedValkey, stop_servers
from tests.conftest import SESSION_LOCK_KEY
from tests.processes import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_valkey(tmp_path):
    """A Valkey server of this test's own, so the sessions below claim dbs on nobody else's server."""
    server = EmbeddedValkey(tmp_path)
    port = server.start()
    yield server.url(port, 0)
    stop_servers(["valkey"], data_dir=tmp_path)


def test_two_sessions_at_once_claim_different_dbs_and_leave_others_alone(servers, private_valkey):
    server_url, _ = servers
    base = private_valkey.rsplit("/", 1)[0]
    bystander = redis.Redis.from_url(f"{base}/15")
    bystander.set("someone-elses-key", "keep me")  # db 15 holds a key: no session may claim or flush it
    env = {key: value for key, value in os.environ.items() if not key.startswith("TEST_")}
    env.update(TEST_DATABASE_URL=server_url, TEST_REDIS_SERVER=private_valkey)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
               "tests/test_pipeline.py", "tests/test_latest_state.py"]
    sessions = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for _ in range(2)]
    claimed: set[int] = set()
    while any(session.poll() is None for session in sessions):
        for db in range(16):
            if redis.Redis.from_url(f"{base}/{db}").exists(SESSION_LOCK_KEY):
                claimed.add(db)
        with contextlib.suppress(subprocess.TimeoutExpired):
            sessions[0].wait(0.2)
    outputs = [session.communicate(timeout=300)[0] for session in sessions]
    for session, output in zip(sessions, outputs, strict=True):
        assert session.returncode == 0, output[-4000:]
    assert len(claimed) >= 2 and 15 not in claimed, claimed  # two sessions, two dbs, never the bystander's
    assert bystander.get("someone-elses-key") == b"keep me"
    # Each session emptied the db it claimed, lock included, and nothing else.
    assert [db for db in range(15) if redis.Redis.from_url(f"{base}/{db}").dbsize()] == []



def test_a_second_valkey_is_never_started_on_a_folder_whose_server_runs(tmp_path):
    server = EmbeddedValkey(tmp_path)
    port = server.start()
    try:
        assert server.running_port() == port
        (server.folder / "port").write_text("1")  # its port file lost: the server no longer looks reachable
        assert server.running_port() is None
        with pytest.raises(EmbeddedServerError, match="does not answer"):
            server.start()
    finally:
        server.stop()


@pytest.fixture
def open_dir():
    """A folder the unprivileged PostgreSQL user can enter (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="energy-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_embedded_servers_keep_their_data_between_runs(open_dir):
    tmp_path = open_dir
    valkey, postgres = EmbeddedValkey(tmp_path), EmbeddedPostgres(tmp_path)
    try:
        port = valkey.start()
        redis.Redis(port=port).set("accepted-reading", "kept")
        pg_port = postgres.start()
        with psycopg.connect(postgres.url(pg_port, "postgres"), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (7)")
    finally:
        stop_servers(data_dir=tmp_path)
    assert (valkey.running_port(), postgres.running_port()) == (None, None)
    port, pg_port = valkey.start(), postgres.start()  # the AOF is replayed, the cluster reopened
    try:
        assert redis.Redis(port=port).get("accepted-reading") == b"kept"
        with psycopg.connect(postgres.url(pg_port, "postgres")) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (7,)
    finally:
        stop_servers(data_dir=tmp_path)

"""Two test sessions at once on one machine: each claims its own empty Redis db and database, touches nothing else."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import redis

from common.embedded_servers import EmbeddedValkey, stop_servers
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

"""The README's first session runs as written: pasted as one block into bash against real processes.

Each step's stdout is compared with the ``# =>`` lines under it (timestamps aside: they are the
day's); a step with no ``# =>`` line must print nothing.
"""

from __future__ import annotations

import re

import pytest

from tests.processes import ROOT, Process, free_port, port_answers, process_env, wait_for
from tests.readme_session import BASE_URL_LINE, first_session_block, first_session_steps, run_first_session

pytestmark = pytest.mark.e2e

def test_the_block_is_split_into_commands_and_their_outputs():
    steps = first_session_steps((ROOT / "README.md").read_text())
    assert steps[1][0] == BASE_URL_LINE
    assert sum(1 for _, expected in steps if expected) >= 8
    assert any(command.startswith("psql \"$DATABASE_URL\"") for command, _ in steps)


def test_the_first_session_prints_what_the_readme_says(settings, db, redis_client, admin_token, tmp_path):
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port, DRAIN_BLOCK_MS="100")
    processes = [Process(name, env, tmp_path) for name in ("web", "worker", "scheduler")]
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
        # The session runs where `make run` would have left .data/: the servers' URLs and the admin key.
        session_dir = tmp_path / "repo"
        (session_dir / ".data").mkdir(parents=True)
        (session_dir / ".data" / "admin.key").write_text(admin_token + "\n")
        (session_dir / ".data" / "run.env").write_text(
            f"export DATABASE_URL='{settings.database_url}'\nexport REDIS_URL='{settings.redis_url}'\n"
        )
        problems = run_first_session(port, session_dir, {**env, "PATH": f"/usr/bin:/bin:{env['PATH']}"})
        assert problems == [], "\n".join(problems)
    finally:
        for process in processes:
            process.stop()


def test_the_readme_links_only_to_documents_of_this_repository_or_of_issues_in_progress():
    readme = (ROOT / "README.md").read_text()
    pending = {"docs/deploying.md", "docs/security.md", "docs/history.md", "docs/dashboard.md"}
    for target in set(re.findall(r"\]\(([^)#]+)\)", readme)):
        assert (ROOT / target).exists() or target in pending, target
    assert len(readme.splitlines()) <= 300


def test_the_readme_runs_nothing_that_needs_the_virtualenv_outside_it():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in first_session_block(readme).splitlines() if not line.startswith("#")]
    for line in commands:
        assert not re.match(r"\s*(flask|python|pytest|rq|gunicorn|honcho)\b", line), line
    assert "psql energy" not in readme

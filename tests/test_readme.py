"""The README's first session runs as written: pasted as one block into bash against real processes.

Each step's stdout is compared with the ``# =>`` lines under it (timestamps aside: they are the
day's); a step with no ``# =>`` line must print nothing.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.processes import ROOT, Process, free_port, port_answers, process_env, wait_for

pytestmark = pytest.mark.e2e

_BLOCK = re.compile(r"<!-- first-session:start -->\n```sh\n(.*?)```\n<!-- first-session:end -->", re.S)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d(:\d\d)?)?")
_BASE_URL_LINE = "B=http://localhost:8000"


def first_session_steps(readme: str) -> list[tuple[str, list[str]]]:
    """Split the block into (command, expected output lines); comments and blank lines are not commands."""
    match = _BLOCK.search(readme)
    assert match, "README.md has no first-session block between its markers"
    steps: list[tuple[str, list[str]]] = []
    command: list[str] = []
    for line in match.group(1).splitlines():
        if line.startswith("# => "):
            assert steps, "an expected output line before any command"
            steps[-1][1].append(line[len("# => "):])
        elif command or (line.strip() and not line.lstrip().startswith("#")):
            command.append(line)
            # A command goes on while a line ends in a backslash or a quoted argument is still open.
            text = "\n".join(command)
            if not line.endswith("\\") and text.count("'") % 2 == 0:
                steps.append((text, []))
                command = []
    assert not command, f"the block ends inside a command: {command}"
    return steps


def normalized(text: str) -> str:
    return _TIMESTAMP.sub("<ts>", text)


def test_the_block_is_split_into_commands_and_their_outputs():
    steps = first_session_steps((ROOT / "README.md").read_text())
    assert steps[1][0] == _BASE_URL_LINE
    assert sum(1 for _, expected in steps if expected) >= 8
    assert any(command.startswith("psql \"$DATABASE_URL\"") for command, _ in steps)


def test_the_first_session_prints_what_the_readme_says(settings, db, redis_client, tmp_path):
    steps = first_session_steps((ROOT / "README.md").read_text())
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port, DRAIN_BLOCK_MS="100")
    processes = [Process(name, env, tmp_path) for name in ("web", "worker", "scheduler")]
    try:
        wait_for(lambda: port_answers(port), 30, message="gunicorn to listen")
        # The session runs where `make run` would have left .data/: the servers' URLs.
        session_dir = tmp_path / "repo"
        (session_dir / ".data").mkdir(parents=True)
        (session_dir / ".data" / "run.env").write_text(
            f"export DATABASE_URL='{settings.database_url}'\nexport REDIS_URL='{settings.redis_url}'\n"
        )
        script = []
        for index, (command, _) in enumerate(steps):
            if command == _BASE_URL_LINE:
                command = f"B=http://127.0.0.1:{port}"
            script += [f"echo '@@step {index}@@'", command]
        result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=session_dir, capture_output=True, text=True,
                                timeout=120, env={**env, "PATH": f"/usr/bin:/bin:{env['PATH']}"})
        printed = re.split(r"^@@step (\d+)@@\n", result.stdout, flags=re.M)[1:]
        outputs = {int(printed[i]): printed[i + 1] for i in range(0, len(printed), 2)}
        assert sorted(outputs) == list(range(len(steps))), f"not every step ran; stderr:\n{result.stderr}"
        for index, (command, expected) in enumerate(steps):
            got = normalized(outputs[index]).rstrip("\n").split("\n") if outputs[index] else []
            assert got == [normalized(line) for line in expected], (
                f"step {index}: {command}\nstderr:\n{result.stderr}"
            )
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
    commands = [line for line in _BLOCK.search(readme).group(1).splitlines() if not line.startswith("#")]
    for line in commands:
        assert not re.match(r"\s*(flask|python|pytest|rq|gunicorn|honcho)\b", line), line
    assert "psql energy" not in readme

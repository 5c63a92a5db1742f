"""The README's first-session block: split it into commands and their ``# =>`` outputs, run it, compare.

Used by tests/test_readme.py (against processes it starts) and by .ci/run (against a real `make run`):
``python -m tests.readme_session --port 8000 --cwd .`` prints each mismatch and exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_URL_LINE = "B=http://localhost:8000"
_BLOCK = re.compile(r"<!-- first-session:start -->\n```sh\n(.*?)```\n<!-- first-session:end -->", re.S)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d(:\d\d)?)?")


def first_session_block(readme: str) -> str:
    """Return the text of the README's first-session code block."""
    match = _BLOCK.search(readme)
    if not match:
        raise ValueError("README.md has no first-session block between its markers")
    return match.group(1)


def first_session_steps(readme: str) -> list[tuple[str, list[str]]]:
    """Split the block into (command, expected output lines); comments and blank lines are not commands."""
    steps: list[tuple[str, list[str]]] = []
    command: list[str] = []
    for line in first_session_block(readme).splitlines():
        if line.startswith("# => "):
            if not steps:
                raise ValueError("an expected output line before any command")
            steps[-1][1].append(line[len("# => "):])
        elif command or (line.strip() and not line.lstrip().startswith("#")):
            command.append(line)
            # A command goes on while a line ends in a backslash or a quoted argument is still open.
            text = "\n".join(command)
            if not line.endswith("\\") and text.count("'") % 2 == 0:
                steps.append((text, []))
                command = []
    if command:
        raise ValueError(f"the block ends inside a command: {command}")
    return steps


def normalized(text: str) -> str:
    """Replace every timestamp by ``<ts>``: the README's are from the day it was written."""
    return _TIMESTAMP.sub("<ts>", text)


def run_first_session(port: int, cwd: Path, env: dict[str, str], readme: Path = ROOT / "README.md") -> list[str]:
    """Run the block as one bash script in ``cwd`` against ``port``; return a description of each mismatch."""
    steps = first_session_steps(readme.read_text())
    script = []
    for index, (command, _) in enumerate(steps):
        if command == BASE_URL_LINE:
            command = f"B=http://127.0.0.1:{port}"
        script += [f"echo '@@step {index}@@'", command]
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, capture_output=True, text=True,
                            timeout=120, env=env, check=False)
    printed = re.split(r"^@@step (\d+)@@\n", result.stdout, flags=re.M)[1:]
    outputs = {int(printed[i]): printed[i + 1] for i in range(0, len(printed), 2)}
    problems = []
    for index, (command, expected) in enumerate(steps):
        if index not in outputs:
            problems.append(f"step {index} never ran: {command}")
            continue
        got = normalized(outputs[index]).rstrip("\n").split("\n") if outputs[index] else []
        want = [normalized(line) for line in expected]
        if got != want:
            problems.append(f"step {index}: {command}\n  README says: {want}\n  printed:     {got}")
    if problems:
        problems.append(f"stderr of the session:\n{result.stderr}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the first session against a running `make run` and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cwd", default=str(ROOT))
    args = parser.parse_args(argv)
    problems = run_first_session(args.port, Path(args.cwd), dict(os.environ))
    print("\n".join(problems) or "README first session: every output as written")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

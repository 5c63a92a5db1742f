"""Create API keys on an engine this machine runs, with its CLI (``flask --app web keys create``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def create_key(env: dict[str, str], name: str, *scopes: str) -> str | None:
    """Return a new key's token, or None while the engine has no keys (the CLI has no ``keys`` command)."""
    command = [sys.executable, "-m", "flask", "--app", "web", "keys", "create", "--name", name, "--json"]
    for scope in scopes:
        command += ["--scope", scope]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        if "No such command" in result.stderr:
            return None
        raise RuntimeError(f"keys create failed: {result.stderr.strip()}")
    return json.loads(result.stdout)["token"]

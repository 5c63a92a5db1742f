"""`make run`: pick the servers (embedded ones if none is given or answers), migrate, run the Procfile, print a banner.

The chosen URLs are written to ``.data/run.env`` so another shell can ``. .data/run.env`` and reach the same
servers (the README's first session does). Embedded servers this run started are stopped when it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common.embedded_servers import DATA_DIR, ROOT, EmbeddedServerError, ensure_servers, stop_servers

_BANNER_WAIT_SECONDS = 60.0


def _web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def banner(port: int, postgres: str, redis_source: str, env: dict[str, str]) -> str:
    """Return the lines that say where everything is, once the web process answers."""
    base = f"http://127.0.0.1:{port}"
    lines = [
        "",
        "=" * 72,
        f"  Energy ingestion engine is up: {base}",
        f"  API docs (Swagger UI):  {base}/docs      OpenAPI: {base}/openapi.json",
    ]
    if (ROOT / "web" / "dashboard.py").exists():
        lines.append(f"  Dashboard:              {base}/dashboard")
    key = DATA_DIR / "admin.key"
    if key.exists():
        lines.append(f"  Admin key:              {key}  (-H \"Authorization: Bearer $(cat .data/admin.key)\")")
    lines += [
        f"  PostgreSQL:             {postgres}",
        f"  Redis:                  {redis_source}",
        f"  Other shells:           . .data/run.env   (sets DATABASE_URL, REDIS_URL)   logs: {env['LOG_FORMAT']}",
        "  Stop with Ctrl+C.",
        "=" * 72,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the Procfile's ``argv`` process types (default web, worker, rollups, scheduler) until Ctrl+C or SIGTERM."""
    names = (sys.argv[1:] if argv is None else argv) or ["web", "worker", "rollups", "scheduler"]
    try:
        choice = ensure_servers()
    except EmbeddedServerError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    env = dict(os.environ, DATABASE_URL=choice.database_url, REDIS_URL=choice.redis_url, PYTHONUNBUFFERED="1")
    port = int(env.get("PORT") or 8000)
    # LOG_FORMAT=auto means readable text on a terminal; the processes' stdout is honcho's pipe, so decide here.
    if env.get("LOG_FORMAT", "auto").strip().lower() in ("", "auto"):
        env["LOG_FORMAT"] = "text" if sys.stdout.isatty() else "json"
    DATA_DIR.mkdir(exist_ok=True)
    (DATA_DIR / "run.env").write_text(
        f"export DATABASE_URL='{choice.database_url}'\nexport REDIS_URL='{choice.redis_url}'\n"
    )
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    try:
        subprocess.run([str(bin_dir / "flask"), "--app", "web", "migrate"], env=env, cwd=ROOT, check=True)
        # An admin key in .data/admin.key (0600, git-ignored) if none exists yet (web/keys.py).
        subprocess.run([str(bin_dir / "flask"), "--app", "web", "keys", "bootstrap-admin", "--file",
                        str(DATA_DIR / "admin.key")], env=env, cwd=ROOT, check=True)
        honcho = subprocess.Popen(
            [str(bin_dir / "honcho"), "start", "--procfile", "Procfile", "--port", str(port), *names],
            env=env, cwd=ROOT,
        )
        signal.signal(signal.SIGTERM, lambda *_: honcho.send_signal(signal.SIGTERM))
        deadline = time.monotonic() + _BANNER_WAIT_SECONDS
        while "web" in names and honcho.poll() is None and time.monotonic() < deadline:
            if _web_answers(port):
                print(banner(port, choice.postgres_source, choice.redis_source, env), flush=True)
                break
            time.sleep(0.2)
        while True:
            try:
                return honcho.wait()
            except KeyboardInterrupt:
                # honcho got the same Ctrl+C from the terminal and stops its processes; wait for it.
                continue
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    finally:
        if choice.started:
            with contextlib.suppress(EmbeddedServerError, OSError):
                stop_servers(choice.started)


if __name__ == "__main__":
    raise SystemExit(main())

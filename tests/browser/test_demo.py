"""``make demo``: from the command to a dashboard showing the simulated fleet within 60 s, and a clean stop."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time

import pytest

from tests.browser.conftest import empty_stores, screenshot
from tests.processes import ROOT, descendants, free_port, port_answers, process_env, wait_for

pytestmark = pytest.mark.e2e
DEMO_VEHICLES = 20


def test_make_demo_shows_a_live_fleet_within_60_s_and_stops_cleanly(settings, browser, tmp_path):
    empty_stores(settings)
    port = free_port()
    env = process_env(settings.database_url, settings.redis_url, port, DEMO_VEHICLES=str(DEMO_VEHICLES),
                      VIRTUAL_ENV=str(ROOT / ".venv"))
    log_path = tmp_path / "demo.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        demo = subprocess.Popen(["make", "--no-print-directory", "demo"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    output = lambda: log_path.read_text(errors="replace")  # noqa: E731 - read on every poll
    try:
        key_line = wait_for(lambda: re.search(r"sign in with (?:this read key: (\S+)|any text)", output()), 60,
                            interval=0.2, message="the demo to print its key")
        key = key_line.group(1) or "demo"
        assert f"http://127.0.0.1:{port}/" in output()
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#key", key)
        page.click("#sign-in-form button[type=submit]")
        remaining_ms = max(1000, (60 - (time.monotonic() - started)) * 1000)
        # Live: every vehicle but the scripted silent one has reported within the last 15 minutes.
        page.wait_for_function(
            "(n) => document.querySelectorAll('#fleet-rows tr').length === n"
            " && document.querySelectorAll('#fleet-rows tr:not(.silent)').length === n - 1",
            arg=DEMO_VEHICLES, timeout=remaining_ms)
        elapsed = time.monotonic() - started
        print(f"make demo: dashboard showed {DEMO_VEHICLES} vehicles {elapsed:.1f} s after the command")
        assert elapsed <= 60
        screenshot(page, "demo-fleet")
        context.close()
    except BaseException:
        print(output())
        raise
    finally:
        tree = [demo.pid, *descendants(demo.pid)]
        # Ctrl-C reaches the whole foreground process group: make and the demo.
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(45)
        except subprocess.TimeoutExpired:
            for pid in tree:  # the engine runs in a session of its own: kill it by pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"make demo did not stop within 45 s:\n{output()}") from None
        finally:
            empty_stores(settings)  # the other tests expect empty tables
    assert "demo: engine stopped" in output(), output()
    wait_for(lambda: not port_answers(port), 10, message="the web port to close")
    wait_for(lambda: not [pid for pid in tree if os.path.exists(f"/proc/{pid}") and not _zombie(pid)], 15,
             message="every process of the demo to exit")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

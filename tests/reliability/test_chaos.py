"""Chaos run: 50,000+ readings from a separate client while workers, Postgres, Redis and the web are knocked over.

At the end, within a deadline: every reading answered 202 is in history exactly once with its
values, nothing answered 4xx is, no entry is pending, the dead-letter stream is empty, and each
device's latest state in Redis and in Postgres is its newest acknowledged reading.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import orjson
import pytest

from tests.reliability import invariants
from tests.reliability.datasets import chaos_plan
from tests.reliability.faults import FaultInjector
from tests.reliability.load_client import readings_in
from tests.reliability.processes import REPO
from tests.reliability.report import REPORT
from tests.reliability.servers import wait_until

SECTION = "chaos run"
# The client spreads the plan over this many seconds; the faults below all happen inside it.
SEND_SECONDS = 110
DRAIN_DEADLINE_SECONDS = 240


def _schedule(injector: FaultInjector) -> list[tuple[float, str, object]]:
    """(seconds after the client starts, label, action): every fault type, worker kills several times."""
    return [
        (5, "kill worker", injector.kill_worker_mid_batch),
        (12, "stop postgres (immediate)", lambda: injector.stop_postgres("immediate")),
        (17, "kill worker while postgres is down", injector.kill_worker_mid_batch),
        (25, "start postgres", injector.start_postgres),
        (28, "kill worker during catch-up", injector.kill_worker_mid_batch),
        (38, "restart redis", injector.restart_redis),
        (50, "restart web", injector.restart_web),
        (60, "kill worker", injector.kill_worker_mid_batch),
        (68, "stop postgres (fast)", lambda: injector.stop_postgres("fast")),
        (80, "start postgres", injector.start_postgres),
        (85, "restart redis", injector.restart_redis),
        (93, "restart web", injector.restart_web),
        (100, "kill worker", injector.kill_worker_mid_batch),
    ]


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_chaos_run_loses_nothing(make_stack, private_servers, tmp_path):
    pg, redis_server = private_servers
    started = time.monotonic()
    stack = make_stack("chaos", redis_db=0)
    stack.start(workers=2, scheduler=True)

    plan = chaos_plan(datetime.now(UTC))
    plan_path, out_path = tmp_path / "plan.jsonl", tmp_path / "outcomes.jsonl"
    plan_path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in plan.lines()))
    readings_planned = sum(readings_in(r["body"]) for r in plan.requests)
    client_log = open(stack.processes.log_dir / "load-client.log", "wb")  # noqa: SIM115 - closed below
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.load_client", "--port", str(stack.port), "--plan", str(plan_path),
         "--out", str(out_path), "--threads", "4", "--rate", str(readings_planned / SEND_SECONDS),
         "--give-up-seconds", "240", "--token", stack.token],
        cwd=REPO, stdout=client_log, stderr=subprocess.STDOUT,
    )
    t0 = time.monotonic()
    injector = FaultInjector(stack, pg, redis_server, t0)
    try:
        for at, _label, action in _schedule(injector):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            action()
        client.wait(timeout=600)
    finally:
        if client.poll() is None:
            client.kill()
        client_log.close()
    client_done = time.monotonic()
    assert client.returncode == 0, (stack.processes.log_dir / "load-client.log").read_text()[-3000:]

    try:
        wait_until(stack.drained, DRAIN_DEADLINE_SECONDS, "every stream entry to be delivered and acknowledged",
                   interval=0.2)
        drained_at: float | None = time.monotonic()
    except TimeoutError:
        drained_at = None  # report what was stored anyway; the assertions below say what is missing

    outcomes = {o["i"]: o for o in map(orjson.loads, out_path.read_bytes().splitlines())}
    expected = invariants.Expected()
    wrong_status = []
    for request in plan.requests:
        status = outcomes[request["i"]]["status"]
        expected.add(request["body"], status)
        if status != (400 if request["role"] == "invalid" else 202):
            wrong_status.append((request["i"], request["role"], status))

    with stack.connect() as conn:
        stored = invariants.history(conn)
        duplicates = invariants.duplicates_stored(conn)
        pg_latest = invariants.postgres_latest(conn)
    client_redis = stack.redis()
    pending, dead_letters = invariants.stream_leftovers(client_redis)
    redis_latest = invariants.redis_latest(client_redis)
    client_redis.close()
    comparison = invariants.compare_history(expected, stored)
    newest = expected.newest()
    redis_wrong = invariants.latest_mismatches(newest, redis_latest)
    pg_wrong = invariants.latest_mismatches(newest, pg_latest)

    faults = injector.log
    kills = faults.counts["worker SIGKILL mid-batch"] + faults.counts["worker SIGKILL between batches"]
    pg_downtimes = [e["down_seconds"] for e in faults.events if e["fault"] == "postgres stop >= 10 s"]
    retries_503 = sum(o["retries_503"] for o in outcomes.values())
    transport = sum(o["transport_errors"] for o in outcomes.values())
    add = REPORT.add
    add(SECTION, "requests sent (single / batch)",
        f"{len(plan.requests):,} ({sum(isinstance(r['body'], dict) for r in plan.requests):,} single)")
    add(SECTION, "readings sent (incl. resent batches)", expected.readings_sent, ">= 50,000")
    add(SECTION, "distinct valid readings", plan.valid_readings)
    add(SECTION, "readings acknowledged (202)", expected.readings_acknowledged)
    add(SECTION, "distinct readings acknowledged", len(expected.acknowledged))
    add(SECTION, "readings rejected (4xx)", expected.readings_sent - expected.readings_acknowledged)
    add(SECTION, "requests with an unexpected final status", len(wrong_status), "0")
    add(SECTION, "retries after 503 / after a transport error", f"{retries_503:,} / {transport:,}")
    add(SECTION, "rows stored in history", comparison.stored, "= distinct acknowledged")
    add(SECTION, "duplicates stored", duplicates, "0")
    add(SECTION, "lost (acknowledged, not stored)", len(comparison.lost), "0")
    add(SECTION, "stored with other values", len(comparison.wrong_values), "0")
    add(SECTION, "answered 4xx but stored", len(comparison.rejected_but_stored), "0")
    add(SECTION, "stored but never acknowledged", len(comparison.unexpected), "0")
    add(SECTION, "entries pending at the end", pending, "0")
    add(SECTION, "dead letters", dead_letters, "0")
    add(SECTION, "devices whose Redis latest is wrong", len(redis_wrong), "0")
    add(SECTION, "devices whose Postgres latest is wrong", len(pg_wrong), "0")
    add(SECTION, "fault: worker SIGKILL (mid-batch / total)",
        f"{faults.counts['worker SIGKILL mid-batch']} / {kills}", ">= 3 mid-batch")
    add(SECTION, "fault: postgres stopped (seconds down)", f"{len(pg_downtimes)} ({', '.join(map(str, pg_downtimes))})",
        ">= 1, >= 10 s")
    add(SECTION, "fault: redis restart (SIGTERM, same AOF)", faults.counts["redis restart (SIGTERM)"], ">= 1")
    add(SECTION, "fault: web SIGTERM + restart", faults.counts["web SIGTERM + restart"], ">= 1")
    add(SECTION, "processes that died on their own (restarted)",
        ", ".join(f"{e.name} ({e.returncode})" for e in stack.processes.unexpected_exits) or "none")
    never = f"not drained within {DRAIN_DEADLINE_SECONDS} s"
    add(SECTION, "time to drain after the last fault (s)",
        round(drained_at - t0 - faults.last_cleared, 1) if drained_at else never)
    add(SECTION, "time to drain after the client finished (s)",
        round(drained_at - client_done, 1) if drained_at else never)
    add(SECTION, "wall time of the chaos test (s)", round(time.monotonic() - started, 1))

    assert drained_at is not None, f"stream not drained within {DRAIN_DEADLINE_SECONDS} s: {stack.backlog()}"
    assert expected.readings_sent >= 50_000
    assert wrong_status == [], f"unexpected final statuses (index, role, status): {wrong_status[:20]}"
    assert comparison.lost == [], f"{len(comparison.lost)} acknowledged readings lost, e.g. {comparison.lost[:5]}"
    assert comparison.wrong_values == [], f"stored with other values: {comparison.wrong_values[:5]}"
    assert comparison.rejected_but_stored == [], f"rejected but stored: {comparison.rejected_but_stored[:5]}"
    assert comparison.unexpected == [], f"stored, never acknowledged: {comparison.unexpected[:5]}"
    assert comparison.stored == len(expected.acknowledged)
    assert duplicates == 0
    assert pending == 0
    assert dead_letters == 0
    assert redis_wrong == [], f"Redis latest state wrong for {len(redis_wrong)} devices, e.g. {redis_wrong[:3]}"
    assert pg_wrong == [], f"Postgres latest state wrong for {len(pg_wrong)} devices, e.g. {pg_wrong[:3]}"
    assert faults.counts["worker SIGKILL mid-batch"] >= 3, faults.events
    assert pg_downtimes and min(pg_downtimes) >= 10, faults.events
    assert faults.counts["redis restart (SIGTERM)"] >= 1
    assert faults.counts["web SIGTERM + restart"] >= 1

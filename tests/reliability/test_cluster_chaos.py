"""Cluster chaos: 8 shards on a 3-master + 3-replica Redis Cluster while a master and workers are SIGKILLed.

The stack runs with REDIS_MIN_REPLICAS_ACK=1: a 202 means the shard's replica has the write, so
a master's death (its replica promoted, ~2-4 s with cluster-node-timeout 2000) loses nothing
acknowledged. At the end: every reading answered 202 is in history exactly once with its values,
nothing is pending, no dead letters, and the latest state in Redis and Postgres is the newest
acknowledged reading of every device. A frozen replica (SIGSTOP) turns its master's shards'
ingest into 503s, not into losses.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import orjson
import pytest
from redis.crc import key_slot

from common.streams import VEHICLE
from tests.conftest import minutes_ago, vehicle
from tests.redis_cluster import RedisClusterNodes, available
from tests.reliability import invariants
from tests.reliability.datasets import chaos_plan
from tests.reliability.faults import FaultInjector
from tests.reliability.load_client import readings_in
from tests.reliability.processes import REPO
from tests.reliability.report import REPORT
from tests.reliability.servers import wait_until

SECTION = "cluster chaos run"
SEND_SECONDS = 60
DRAIN_DEADLINE_SECONDS = 180

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not available(), reason="redis-server/redis-cli not installed")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, log_dir):
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        for port in nodes.ports:
            if nodes.log(port).exists():
                shutil.copy(nodes.log(port), log_dir / f"redis-cluster-{port}.log")


def _knobs(cluster: RedisClusterNodes) -> dict[str, str]:
    return {"REDIS_CLUSTER_URL": cluster.url, "STREAM_SHARDS": "8", "REDIS_MIN_REPLICAS_ACK": "1",
            "REDIS_WAIT_TIMEOUT_MS": "1000"}


class ClusterFaults:
    """SIGKILL the master serving a shard, later start it again (it rejoins as a replica)."""

    def __init__(self, cluster: RedisClusterNodes, stack, t0: float):
        self.cluster = cluster
        self.stack = stack
        self.t0 = t0
        self.killed: int | None = None
        self.events: list[dict] = []

    def kill_master_of_shard(self, shard: int = 0) -> None:
        port = self.cluster.master_of_slot(key_slot(self.stack.keys.stream(shard).encode()))
        started = time.monotonic()
        self.cluster.kill(port)
        self.killed = port
        # The replica takes over once the others agree the master failed (cluster-node-timeout).
        wait_until(lambda: self.cluster.master_of_slot(key_slot(self.stack.keys.stream(shard).encode())) != port,
                   30, "a replica to be promoted", interval=0.1)
        self.events.append({"fault": "master SIGKILL", "port": port, "at": round(started - self.t0, 1),
                            "promoted_after": round(time.monotonic() - started, 1)})

    def restart_killed(self) -> None:
        started = time.monotonic()
        self.cluster.start_node(self.killed)
        self.cluster.wait_ok(60)
        self.events.append({"fault": "old master restarted (rejoins as a replica)", "port": self.killed,
                            "at": round(started - self.t0, 1), "in_sync_after": round(time.monotonic() - started, 1)})


@pytest.mark.timeout(900)
def test_cluster_chaos_loses_and_duplicates_nothing(make_stack, private_servers, cluster, tmp_path):
    pg, redis_server = private_servers
    started = time.monotonic()
    cluster.flush()
    stack = make_stack("cluster_chaos", redis_db=1, knobs=_knobs(cluster))
    stack.start(workers=2, scheduler=True)

    plan = chaos_plan(datetime.now(UTC), meters=100, vehicles=100, per_device=120)
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
    faults = ClusterFaults(cluster, stack, t0)
    schedule = [
        (6, injector.kill_worker_mid_batch),
        (12, faults.kill_master_of_shard),
        (16, injector.kill_worker_mid_batch),
        (24, faults.restart_killed),
        (40, injector.kill_worker_mid_batch),
    ]
    try:
        for at, action in schedule:
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
        wait_until(stack.drained, DRAIN_DEADLINE_SECONDS, "every shard's entries to be delivered and acknowledged",
                   interval=0.2)
        drained_at: float | None = time.monotonic()
    except TimeoutError:
        drained_at = None

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
    data = stack.redis()
    pending, dead_letters = invariants.stream_leftovers(data, stack.keys)
    redis_latest = invariants.redis_latest(data, stack.keys)
    data.close()
    stack.stop()  # its drains would take the next test's readings: both use the cluster's streams
    comparison = invariants.compare_history(expected, stored)
    newest = expected.newest()
    redis_wrong = invariants.latest_mismatches(newest, redis_latest)
    pg_wrong = invariants.latest_mismatches(newest, pg_latest)
    retries_503 = sum(o["retries_503"] for o in outcomes.values())
    kills = injector.log.counts["worker SIGKILL mid-batch"] + injector.log.counts["worker SIGKILL between batches"]

    add = REPORT.add
    add(SECTION, "layout", "8 shards, 3 masters + 3 replicas, REDIS_MIN_REPLICAS_ACK=1")
    add(SECTION, "readings sent (incl. resent batches)", expected.readings_sent)
    add(SECTION, "readings acknowledged (202)", expected.readings_acknowledged)
    add(SECTION, "requests with an unexpected final status", len(wrong_status), "0")
    add(SECTION, "retries after 503", f"{retries_503:,}")
    add(SECTION, "rows stored in history", comparison.stored, "= distinct acknowledged")
    add(SECTION, "duplicates stored", duplicates, "0")
    add(SECTION, "lost (acknowledged, not stored)", len(comparison.lost), "0")
    add(SECTION, "stored with other values", len(comparison.wrong_values), "0")
    add(SECTION, "answered 4xx but stored", len(comparison.rejected_but_stored), "0")
    add(SECTION, "entries pending at the end", pending, "0")
    add(SECTION, "dead letters", dead_letters, "0")
    add(SECTION, "devices whose Redis latest is wrong", len(redis_wrong), "0")
    add(SECTION, "devices whose Postgres latest is wrong", len(pg_wrong), "0")
    add(SECTION, "fault: master SIGKILL (promotion s)",
        ", ".join(str(e.get("promoted_after")) for e in faults.events if e["fault"] == "master SIGKILL"), ">= 1")
    add(SECTION, "fault: worker SIGKILL (mid-batch / total)",
        f"{injector.log.counts['worker SIGKILL mid-batch']} / {kills}", ">= 1 mid-batch")
    add(SECTION, "time to drain after the client finished (s)",
        round(drained_at - client_done, 1) if drained_at else f"not drained within {DRAIN_DEADLINE_SECONDS} s")
    add(SECTION, "wall time (s)", round(time.monotonic() - started, 1))

    assert drained_at is not None, f"not drained within {DRAIN_DEADLINE_SECONDS} s: {stack.backlog()}"
    assert wrong_status == [], f"unexpected final statuses (index, role, status): {wrong_status[:20]}"
    assert comparison.lost == [], f"{len(comparison.lost)} acknowledged readings lost, e.g. {comparison.lost[:5]}"
    assert comparison.wrong_values == [], comparison.wrong_values[:5]
    assert comparison.rejected_but_stored == [], comparison.rejected_but_stored[:5]
    assert comparison.unexpected == [], comparison.unexpected[:5]
    assert comparison.stored == len(expected.acknowledged)
    assert duplicates == 0
    assert pending == 0
    assert dead_letters == 0
    assert redis_wrong == [], f"Redis latest wrong for {len(redis_wrong)} devices, e.g. {redis_wrong[:3]}"
    assert pg_wrong == [], f"Postgres latest wrong for {len(pg_wrong)} devices, e.g. {pg_wrong[:3]}"
    assert any(e["fault"] == "master SIGKILL" for e in faults.events), faults.events
    assert injector.log.counts["worker SIGKILL mid-batch"] >= 1, injector.log.events


@pytest.mark.timeout(300)
def test_a_frozen_replica_turns_its_shards_ingest_into_503s_not_losses(make_stack, cluster):
    cluster.wait_ok(60)
    cluster.flush()
    stack = make_stack("cluster_frozen_replica", redis_db=2, knobs=_knobs(cluster))
    stack.start(workers=1, scheduler=True)
    keys = stack.keys
    master = cluster.masters_now()[0]
    [replica] = cluster.replicas_of(master)
    frozen_shards = {s for s in range(keys.shards)
                     if cluster.master_of_slot(key_slot(keys.stream(s).encode())) == master}
    devices = [f"fz-{i}" for i in range(64)]
    ts = minutes_ago(1)
    http = stack.http(timeout=30)
    cluster.kill(replica, signal.SIGSTOP)
    try:
        answers = {d: http.post_json("/v1/telemetry", vehicle(d, ts=ts)) for d in devices}
    finally:
        cluster.kill(replica, signal.SIGCONT)
    refused = {d for d, r in answers.items() if r.status == 503}
    on_frozen = {d for d in devices if keys.shard_of(VEHICLE, d) in frozen_shards}
    assert frozen_shards and on_frozen
    assert refused == on_frozen, {d: answers[d].status for d in devices}
    body = answers[next(iter(refused))].json()
    assert (body["error"], body["partlyStored"]) == ("replicas_unconfirmed", True)
    assert all(answers[d].status == 202 for d in set(devices) - refused)

    cluster.wait_ok(60)
    deadline = time.monotonic() + 60
    for d in sorted(refused):  # the client resends what was refused: harmless
        while (status := http.post_json("/v1/telemetry", vehicle(d, ts=ts)).status) != 202:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.2)
    http.close()
    wait_until(stack.drained, 120, "the drain to catch up", interval=0.2)
    with stack.connect() as conn:
        rows = conn.execute("SELECT vehicle_id, count(*) FROM vehicle_readings GROUP BY 1").fetchall()
    assert dict(rows) == dict.fromkeys(devices, 1)
    REPORT.add(SECTION, "frozen replica: requests on its master's shards answered 503", f"{len(refused)} of 64")

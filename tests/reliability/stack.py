"""One deployment of the engine on the private servers: its database, its Redis db, its processes."""

from __future__ import annotations

from pathlib import Path

import psycopg
import redis

from common.redis_clients import data_client
from common.settings import Settings
from common.streams import CONSUMER_GROUP, KeySpace
from tests.reliability.http_client import CONNECTION_ERRORS, HttpClient
from tests.reliability.processes import ProcessManager
from tests.reliability.servers import PrivatePostgres, PrivateRedis, free_port, wait_until
from web.keys import KeySpec, create_keys

# Short enough that a killed worker's entries come back within seconds, long enough that a
# healthy worker keeps its batch while Postgres is briefly slow.
DEFAULT_KNOBS = {
    "RECLAIM_IDLE_SECONDS": "5",
    "DRAIN_JOB_SECONDS": "15",
    "DRAIN_BLOCK_MS": "250",
    "DEAD_LETTER_AFTER": "5",
    "REDIS_SOCKET_TIMEOUT": "5",
}


class Stack:
    """gunicorn, rq workers and the scheduler for one database and one Redis logical db."""

    def __init__(self, pg: PrivatePostgres, redis_server: PrivateRedis, dbname: str, redis_db: int,
                 log_dir: Path, run_id: str, knobs: dict[str, str] | None = None):
        self.pg = pg
        self.redis_server = redis_server
        self.redis_db = redis_db
        self.port = free_port()
        self.database_url = pg.url(dbname)
        self.env = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis_server.url(redis_db),
            "PORT": str(self.port),
            **DEFAULT_KNOBS,
            **(knobs or {}),
        }
        self.keys = KeySpace.for_settings(Settings.from_env(self.env))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessManager(self.env, log_dir, run_id)
        self.token: str | None = None  # the stack's admin key, made by release()

    # -- lifecycle -----------------------------------------------------------------------------

    def release(self) -> str:
        """Create the database, migrate and create partitions (the Procfile's release command); make the stack's key."""
        output = self.processes.run_release()
        with self.connect() as conn:
            # The load clients send an admin key whose limit no test comes near, as a gateway's key would.
            self.token = create_keys(conn, [KeySpec("reliability suite", ("admin",), rate_limit="100000000/minute")])[
                0]["token"]
        return output

    def start(self, workers: int = 2, scheduler: bool = True, web: bool = True) -> None:
        """Start the processes, wait until the web answers, and supervise them."""
        if web:
            self.processes.start("web")
        for _ in range(workers):
            self.processes.start("worker")
        if scheduler:
            self.processes.start("scheduler")
        if web:
            self.wait_web()
        self.processes.supervise()

    def stop(self) -> None:
        """Stop every process of this stack."""
        self.processes.stop_all()

    def wait_web(self, timeout: float = 60) -> None:
        """Wait until gunicorn answers ``/healthz``."""
        client = HttpClient("127.0.0.1", self.port, timeout=2)

        def answers() -> bool:
            try:
                return client.get("/healthz").status == 200
            except CONNECTION_ERRORS:
                return False

        try:
            wait_until(answers, timeout, "the web process to answer /healthz", interval=0.1)
        finally:
            client.close()

    def http(self, timeout: float = 30) -> HttpClient:
        """Return a new HTTP client on the web process."""
        return HttpClient("127.0.0.1", self.port, timeout=timeout, token=self.token)

    # -- data access ---------------------------------------------------------------------------

    def connect(self) -> psycopg.Connection:
        """Open an autocommit connection to the stack's database."""
        return psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)

    def redis(self) -> redis.Redis:
        """Return a decoded client on the stack's data Redis (its Redis db, or its cluster)."""
        if self.env.get("REDIS_CLUSTER_URL"):
            return data_client(Settings.from_env(self.env))
        return self.redis_server.client(self.redis_db)

    def backlog(self) -> tuple[int, bool]:
        """Return (entries pending in the groups, whether every shard's entries have been delivered)."""
        client = self.redis()
        pending_total, delivered_all = 0, True
        try:
            for stream in self.keys.all_streams():
                if not client.exists(stream):
                    continue
                groups = {g["name"]: g for g in client.xinfo_groups(stream)}
                group = groups.get(CONSUMER_GROUP)
                last_id = client.xinfo_stream(stream)["last-generated-id"]
                if group is None:
                    delivered_all = delivered_all and last_id in ("0-0", None)
                    continue
                pending_total += int(group["pending"])
                delivered_all = delivered_all and group["last-delivered-id"] == last_id
            return pending_total, delivered_all
        finally:
            client.close()

    def drained(self) -> bool:
        """Tell whether every stream entry has been delivered and acknowledged."""
        try:
            pending, delivered = self.backlog()
        except redis.RedisError:
            return False
        return pending == 0 and delivered

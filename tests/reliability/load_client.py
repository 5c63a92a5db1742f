"""The load-generating client, run as its own process: send a plan of requests, retry, record every answer.

    python -m tests.reliability.load_client --port 8000 --plan plan.jsonl --out outcomes.jsonl \
        --token eik_... [--threads 4] [--rate 500] [--give-up-seconds 240]

Each plan line is ``{"i": n, "body": <JSON body>}``. Requests go out in plan order (with
``--threads`` > 1 several are in flight at once), paced to ``--rate`` readings per second. A 503
or a transport error (refused, reset, timeout) is retried until another answer comes; the final
answer of each request is one line of the outcomes file:
``{"i", "status", "attempts", "retries_503", "transport_errors"}`` (``status`` 0: gave up).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import orjson

from tests.reliability.http_client import CONNECTION_ERRORS, HttpClient

PATH = "/v1/telemetry"


def readings_in(body) -> int:
    """Return how many readings a request body carries."""
    return len(body) if isinstance(body, list) else 1


class LoadClient:
    """Send the plan with a few keep-alive connections and retry until each request has a final answer."""

    def __init__(self, port: int, plan: list[dict], threads: int, rate: float, give_up_seconds: float,
                 token: str | None = None):
        self.port = port
        self.token = token
        self.plan = plan
        self.threads = threads
        self.rate = rate
        self.give_up_seconds = give_up_seconds
        self.outcomes: list[dict | None] = [None] * len(plan)
        self._next = 0
        self._lock = threading.Lock()
        # When each request may leave, so that readings flow at ``rate`` per second.
        self._due: list[float] = []
        cumulative = 0
        for entry in plan:
            self._due.append(cumulative / rate if rate > 0 else 0.0)
            cumulative += readings_in(entry["body"])
        self.counts = {"requests": 0, "readings_acked": 0, "retries_503": 0, "transport_errors": 0}

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self.plan):
                return None
            self._next += 1
            return self._next - 1

    def _send(self, client: HttpClient, index: int) -> dict:
        body = orjson.dumps(self.plan[index]["body"])
        started = time.monotonic()
        attempts = retries_503 = transport_errors = 0
        backoff = 0.05
        while True:
            attempts += 1
            try:
                answer = client.request("POST", PATH, body)
            except CONNECTION_ERRORS:
                transport_errors += 1
                answer = None
            if answer is not None and answer.status != 503:
                return {"i": index, "status": answer.status, "attempts": attempts, "retries_503": retries_503,
                        "transport_errors": transport_errors}
            if answer is not None:
                retries_503 += 1
                retry_after = float(answer.headers.get("retry-after", "1") or 1)
                pause = min(retry_after, 0.5)
            else:
                pause = backoff
                backoff = min(backoff * 2, 1.0)
            if time.monotonic() - started > self.give_up_seconds:
                return {"i": index, "status": 0, "attempts": attempts, "retries_503": retries_503,
                        "transport_errors": transport_errors}
            time.sleep(pause)

    def _run_thread(self, t0: float) -> None:
        client = HttpClient("127.0.0.1", self.port, timeout=15, token=self.token)
        try:
            while (index := self._take()) is not None:
                delay = t0 + self._due[index] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                outcome = self._send(client, index)
                self.outcomes[index] = outcome
                with self._lock:
                    self.counts["requests"] += 1
                    self.counts["retries_503"] += outcome["retries_503"]
                    self.counts["transport_errors"] += outcome["transport_errors"]
                    if outcome["status"] == 202:
                        self.counts["readings_acked"] += readings_in(self.plan[index]["body"])
        finally:
            client.close()

    def run(self) -> list[dict]:
        """Send every request; print progress every few seconds; return the outcomes in plan order."""
        t0 = time.monotonic()
        workers = [threading.Thread(target=self._run_thread, args=(t0,), daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        while any(w.is_alive() for w in workers):
            for worker in workers:
                worker.join(5.0 / len(workers))
            with self._lock:
                print(json.dumps({"elapsed": round(time.monotonic() - t0, 1), **self.counts}), flush=True)
        return [o for o in self.outcomes if o is not None]


def load_plan(path: str) -> list[dict]:
    """Read a plan file."""
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the client from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="readings per second; 0 sends as fast as it can")
    parser.add_argument("--give-up-seconds", type=float, default=240.0)
    parser.add_argument("--token", default=None, help="the API key to send (Authorization: Bearer)")
    args = parser.parse_args(argv)
    plan = load_plan(args.plan)
    outcomes = LoadClient(args.port, plan, args.threads, args.rate, args.give_up_seconds, args.token).run()
    with open(args.out, "wb") as f:
        for outcome in outcomes:
            f.write(orjson.dumps(outcome) + b"\n")
    print(json.dumps({"done": True, "requests": len(outcomes)}), flush=True)
    return 0 if len(outcomes) == len(plan) else 1


if __name__ == "__main__":
    sys.exit(main())

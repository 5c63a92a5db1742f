"""A small HTTP client of the engine's public API (standard library only): ingest, mappings, health."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator

# The engine takes up to MAX_READINGS_PER_REQUEST (default 5,000) readings in one request.
BATCH_SIZE = 5000
RETRY_STATUSES = frozenset({429, 503})


class EngineError(RuntimeError):
    """The engine answered with an error that retrying will not fix."""

    def __init__(self, status: int, body: str, what: str):
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class EngineClient:
    """Talk to one engine at ``base_url`` with a bearer ``key`` (or none while the engine has no identity check)."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 30.0, max_wait: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.max_wait = max_wait

    def request(self, method: str, path: str, body=None) -> tuple[int, object]:
        """Send one request; retry on 429/503 after the server's Retry-After; return ``(status, JSON or None)``."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        deadline = time.monotonic() + self.max_wait
        while True:
            req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    raw = response.read()
                    return response.status, json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                raw = exc.read().decode(errors="replace")
                if exc.code in RETRY_STATUSES and time.monotonic() < deadline:
                    time.sleep(min(10.0, float(exc.headers.get("Retry-After") or 1)))
                    continue
                try:
                    return exc.code, json.loads(raw)
                except ValueError:
                    raise EngineError(exc.code, raw, f"{method} {path}") from None

    def healthy(self) -> bool:
        """Tell whether the engine answers its liveness probe."""
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def ingest(self, readings: list[dict]) -> int:
        """POST ``readings`` in batches; return how many the engine accepted (raise on a refusal)."""
        accepted = 0
        for batch in batches(readings, BATCH_SIZE):
            status, answer = self.request("POST", "/v1/telemetry", batch)
            if status != 202:
                raise EngineError(status, json.dumps(answer), "POST /v1/telemetry")
            accepted += answer["accepted"]
        return accepted

    def map_vehicle(self, vehicle_id: str, meter_id: str) -> None:
        """Map ``vehicle_id`` to the meter that feeds it (201 new, 200 replaced)."""
        status, answer = self.request("POST", "/v1/mappings", {"vehicleId": vehicle_id, "meterId": meter_id})
        if status not in (200, 201):
            raise EngineError(status, json.dumps(answer), "POST /v1/mappings")


def batches(items: list, size: int) -> Iterator[list]:
    """Yield ``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def flatten(groups: Iterable[list[dict]]) -> list[dict]:
    """Return the readings of every group in one list."""
    return [reading for group in groups for reading in group]

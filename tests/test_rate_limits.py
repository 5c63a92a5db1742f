"""Rate limits: per key (its own or its kind's default), shared by every process; failed authentications per address."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import bearer, meter, vehicle
from tests.processes import Process, free_port, port_answers, process_env, wait_for
from web.auth import new_token


def assert_rate_limited(response):
    assert response.status_code == 429, response.data
    body = response.get_json()
    assert body["error"] == "rate_limited"
    assert isinstance(body["retryAfter"], int) and 1 <= body["retryAfter"] <= 60
    assert response.headers["Retry-After"] == str(body["retryAfter"])


def test_the_key_past_its_own_limit_gets_429_on_every_route(anon_client, auth):
    token = auth.create_key(scopes=["ingest", "read"], rate_limit="3/minute")
    for i in range(3):
        assert anon_client.post("/v1/telemetry", json=meter("m1", kwh=10.0 + i), headers=bearer(token)).status_code \
            == 202
    assert_rate_limited(anon_client.post("/v1/telemetry", json=meter("m1", kwh=20.0), headers=bearer(token)))
    # One count per key, whatever the route.
    assert_rate_limited(anon_client.get("/v1/meters/m1/latest", headers=bearer(token)))
    other = auth.create_key(scopes=["ingest"], rate_limit="3/minute")
    assert anon_client.post("/v1/telemetry", json=meter("m1", kwh=21.0), headers=bearer(other)).status_code == 202


def test_reads_and_ingest_share_the_count(anon_client, auth):
    token = auth.create_key(device="vehicle:ev-1", rate_limit="2/minute")
    assert anon_client.get("/v1/vehicles/ev-1/latest", headers=bearer(token)).status_code == 404
    assert anon_client.get("/v1/vehicles/ev-1/latest", headers=bearer(token)).status_code == 404
    assert_rate_limited(anon_client.post("/v1/telemetry", json=vehicle("ev-1"), headers=bearer(token)))


def test_a_device_key_without_its_own_limit_gets_the_device_default(settings, redis_client, auth, db):
    from web import create_app

    app = create_app(dataclasses.replace(settings, device_key_rate_limit="2/minute"))
    client = app.test_client()
    token = auth.create_key(device="meter:m-d")
    gateway = auth.create_key(scopes=["ingest"])
    for kwh in (1.0, 2.0):
        assert client.post("/v1/telemetry", json=meter("m-d", kwh=kwh), headers=bearer(token)).status_code == 202
    assert_rate_limited(client.post("/v1/telemetry", json=meter("m-d", kwh=3.0), headers=bearer(token)))
    for kwh in (4.0, 5.0, 6.0):  # a key of another kind has the other default
        assert client.post("/v1/telemetry", json=meter("m-d", kwh=kwh), headers=bearer(gateway)).status_code == 202


def test_the_limit_resets_when_its_window_ends(anon_client, auth):
    token = auth.create_key(scopes=["read"], rate_limit="2/second")
    statuses = [anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code for _ in range(3)]
    assert statuses[-1] == 429
    wait_for(lambda: anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code == 404,
             timeout=5, interval=0.2, message="the 1 s window to end")


def test_failed_authentications_are_limited_per_address(settings, redis_client, db, auth):
    from web import create_app

    app = create_app(dataclasses.replace(settings, auth_failure_rate_limit="3/minute"))
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "198.51.100.1"
    for _ in range(3):
        assert attacker.get("/v1/keys", headers=bearer(new_token()[1])).status_code == 401
    assert_rate_limited(attacker.get("/v1/keys", headers=bearer(new_token()[1])))
    assert_rate_limited(attacker.get("/v1/keys", headers={"Authorization": "Basic Zm9vOmJhcg=="}))
    bystander = app.test_client()
    bystander.environ_base["REMOTE_ADDR"] = "198.51.100.2"
    assert bystander.get("/v1/keys", headers=bearer(new_token()[1])).status_code == 401
    assert bystander.get("/v1/keys", headers=bearer(auth.create_key(scopes=["admin"]))).status_code == 200


@pytest.mark.parametrize("hops", [0, 1])
def test_the_client_address_comes_from_x_forwarded_for_only_behind_trusted_proxies(settings, redis_client, db, hops):
    from web import create_app

    app = create_app(dataclasses.replace(settings, auth_failure_rate_limit="2/minute", trusted_proxy_hops=hops))
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"192.0.2.{10 + hops}"  # the proxy
    statuses = [
        client.get("/v1/keys", headers={**bearer(new_token()[1]), "X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(3)
    ]
    # Trusted: three different clients, each failing once. Not trusted: one address (the proxy's), failing thrice.
    assert statuses == ([401, 401, 401] if hops else [401, 401, 429])


# -- real processes --------------------------------------------------------------------------------------------


def http(port: int, method: str, path: str, token: str, body=None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **bearer(token)})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def two_web_processes(settings, db, redis_client, tmp_path):
    """Two gunicorns (two workers each) on the same Postgres and Redis, as two dynos would be."""
    ports = [free_port(), free_port()]
    # Refusing the revoked key over and over must stay a 401, not become a brute-force 429.
    procs = [Process("web", process_env(settings.database_url, settings.redis_url, port,
                                        AUTH_FAILURE_RATE_LIMIT="100000/minute"), tmp_path)
             for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            try:
                wait_for(lambda p=port: port_answers(p), 30, message="gunicorn to listen")
            except AssertionError:
                raise AssertionError(proc.output()) from None
        yield ports
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.e2e
def test_the_limit_is_shared_by_two_web_processes(two_web_processes, auth):
    token = auth.create_key(device="vehicle:ev-9", rate_limit="6/minute")
    ports = two_web_processes
    statuses = [http(ports[i % 2], "POST", "/v1/telemetry", token, vehicle("ev-9", kwh=8.0 + i)) for i in range(7)]
    assert statuses == [202] * 6 + [429]
    assert http(ports[0], "GET", "/v1/vehicles/ev-9/latest", token) == 429


@pytest.mark.e2e
def test_a_revocation_reaches_every_worker_of_every_process_within_5_seconds(two_web_processes, auth, admin_token):
    token = auth.create_key(scopes=["read"])
    ports = two_web_processes
    for port in ports:  # enough requests that every worker of both has the key cached
        assert {http(port, "GET", "/v1/vehicles/v1/latest", token) for _ in range(12)} == {404}
    revoked_at = time.monotonic()
    assert http(ports[0], "DELETE", f"/v1/keys/{auth.key_id(token)}", admin_token) == 204

    def refused_everywhere() -> bool:
        return all(http(port, "GET", "/v1/vehicles/v1/latest", token) == 401 for port in ports for _ in range(8))

    wait_for(refused_everywhere, timeout=5, interval=0.1, message="every worker to refuse the revoked key")
    assert time.monotonic() - revoked_at <= 5

"""Access control: every route x every kind of credential gives the documented answer; device keys; the hot path."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from common.streams import STREAM_KEY, VEHICLE, latest_key
from tests.conftest import RedisRoundTrips, bearer, meter, vehicle
from web import db as web_db
from web.auth import PUBLIC_ENDPOINTS, hash_token, new_token

# The scope each route needs. A route missing here is held to the default rule (GET/HEAD under
# /v1: read; anything else: admin), so a new route is covered the day it is added.
EXPECTED_SCOPE = {
    ("telemetry.ingest", "POST"): "ingest",
    ("ops.readyz", "GET"): "metrics",
    ("ops.metrics_endpoint", "GET"): "metrics",
    ("keys.get_keys", "GET"): "admin",
    ("latest.vehicles_latest", "POST"): "read",  # multi-reads with the ids in the body
    ("latest.meters_latest", "POST"): "read",
    ("conflicts.list_conflicts", "GET"): "admin",  # a GET, but the conflicts are the operator's business
}
EXAMPLE_ARGUMENTS = {"vehicle_id": "vehicle-1", "meter_id": "meter-1", "key_id": "0123456789abcdef"}


def expected_scope(endpoint: str, method: str, path: str) -> str:
    default = "read" if method in ("GET", "HEAD") and path.startswith("/v1/") else "admin"
    return EXPECTED_SCOPE.get((endpoint, method), default)


def guarded_requests(app) -> list[tuple[str, str, str]]:
    """Every (endpoint, method, concrete path) of the URL map that needs a key."""
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            path = adapter.build(rule.endpoint, {a: EXAMPLE_ARGUMENTS.get(a, "x1") for a in rule.arguments},
                                 method=method)
            found.append((rule.endpoint, method, path))
    return found


def send(client, method, path, headers=None):
    return client.open(path, method=method, headers=headers or {})


def assert_unauthorized(response):
    assert response.status_code == 401, response.data
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = response.get_json()
    assert body["error"] == "unauthorized" and body["message"]


def test_the_walk_covers_the_api(app):
    walked = {(e, m) for e, m, _ in guarded_requests(app)}
    assert {("telemetry.ingest", "POST"), ("mappings.put_mapping", "POST"), ("keys.delete_key", "DELETE"),
            ("ops.metrics_endpoint", "GET"), ("latest.vehicles_latest", "GET")} <= walked


def test_every_route_but_the_public_ones_needs_a_key(app, anon_client):
    """Walks app.url_map: a route added tomorrow is held to this too."""
    for _endpoint, method, path in guarded_requests(app):
        assert_unauthorized(send(anon_client, method, path))


def test_public_endpoints_answer_without_a_key(anon_client):
    for path in ("/healthz", "/openapi.json", "/docs"):
        assert anon_client.get(path).status_code == 200, path


@pytest.fixture
def credentials(auth, client, settings):
    """One token per kind of credential, and the malformed headers."""
    revoked = auth.create_key(scopes=["admin"])
    assert client.delete(f"/v1/keys/{auth.key_id(revoked)}").status_code == 204
    _, unknown = new_token()
    return {
        "revoked": revoked,
        "unknown": unknown,
        "expired": auth.create_key(scopes=["admin"], expires_at=datetime.now(UTC) - timedelta(seconds=1)),
        "by_scope": {scope: auth.create_key(scopes=[scope]) for scope in ("ingest", "read", "admin", "metrics")},
    }


MALFORMED = ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token eik_x", "eik_abc", "Bearer not-a-token", "bearer  "]


def test_every_route_times_every_credential(app, anon_client, credentials):
    for endpoint, method, path in guarded_requests(app):
        needed = expected_scope(endpoint, method, path)
        where = f"{method} {path}"
        assert_unauthorized(send(anon_client, method, path))
        for header in MALFORMED:
            assert_unauthorized(send(anon_client, method, path, {"Authorization": header}))
        for name in ("unknown", "revoked", "expired"):
            response = send(anon_client, method, path, bearer(credentials[name]))
            assert_unauthorized(response)
            # The same words whatever the reason: no hint whether a key id exists.
            assert response.get_json()["message"] == send(
                anon_client, method, path, bearer(credentials["unknown"])).get_json()["message"]
        wrong = next(s for s in ("read", "ingest", "metrics") if s != needed)
        response = send(anon_client, method, path, bearer(credentials["by_scope"][wrong]))
        assert response.status_code == 403, where
        body = response.get_json()
        assert (body["error"], body["requiredScope"]) == ("forbidden", needed), where
        assert body["message"]
        for token in (credentials["by_scope"][needed], credentials["by_scope"]["admin"]):
            response = send(anon_client, method, path, bearer(token))
            assert response.status_code not in (401, 403, 429), (where, response.data)
            assert response.status_code < 500, (where, response.data)


# -- device keys -----------------------------------------------------------------------------------------------


def test_a_device_key_writes_and_reads_its_own_device(anon_client, auth):
    token = auth.create_key(device="vehicle:ev-17")
    r = anon_client.post("/v1/telemetry", json=vehicle("ev-17", soc=42.0), headers=bearer(token))
    assert r.status_code == 202
    r = anon_client.get("/v1/vehicles/ev-17/latest", headers=bearer(token))
    assert (r.status_code, r.get_json()["soc"]) == (200, 42.0)


def test_a_device_key_reaches_nothing_else(anon_client, auth, redis_client):
    token = auth.create_key(device={"kind": "vehicle", "id": "ev-17"})
    redis_client.hset(latest_key(VEHICLE, "ev-18"), "json", "{}")
    for method, path in (("GET", "/v1/vehicles/ev-18/latest"), ("GET", "/v1/meters/ev-17/latest"),
                         ("GET", "/v1/vehicles/latest?ids=ev-17"), ("GET", "/v1/mappings/ev-17"),
                         ("GET", "/v1/analytics/performance/ev-17"), ("GET", "/metrics"), ("GET", "/v1/keys"),
                         ("POST", "/v1/mappings")):
        response = send(anon_client, method, path, bearer(token))
        assert response.status_code == 403, (method, path)
        assert response.get_json()["error"] == "forbidden"


def test_a_device_key_sending_another_device_is_refused_whole(anon_client, auth, redis_client, db):
    token = auth.create_key(device="vehicle:ev-17")
    r = anon_client.post("/v1/telemetry", json=vehicle("ev-18"), headers=bearer(token))
    assert r.status_code == 403
    assert r.get_json()["items"] == [{"index": 0, "vehicleId": "ev-18"}]
    mixed = [vehicle("ev-17"), meter("ev-17"), vehicle("ev-17", ts=None), vehicle("ev-99")]
    r = anon_client.post("/v1/telemetry", json=mixed, headers=bearer(token))
    body = r.get_json()
    assert (r.status_code, body["error"], body["requiredScope"]) == (403, "forbidden", "ingest")
    assert [item["index"] for item in body["items"]] == [1, 3]
    # Nothing of either request reached Redis, so nothing can reach Postgres.
    assert redis_client.xlen(STREAM_KEY) == 0
    assert not redis_client.exists(latest_key(VEHICLE, "ev-17"))
    assert db.execute("SELECT count(*) FROM vehicle_readings").fetchone()[0] == 0


def test_a_device_key_may_not_hold_wide_scopes(client):
    r = client.post("/v1/keys", json={"name": "bad", "scopes": ["admin"], "device": {"kind": "meter", "id": "m1"}})
    assert r.status_code == 400
    assert "scopes" in r.get_json()["fields"]


# -- the hot path ----------------------------------------------------------------------------------------------


def test_a_known_key_costs_no_round_trip(anon_client, app, auth, monkeypatch):
    """Steady state: one Redis call per ingest (the ingest script, which also counts the rate limit), no Postgres."""
    token = auth.create_key(device="meter:m-hot")
    assert anon_client.post("/v1/telemetry", json=meter("m-hot"), headers=bearer(token)).status_code == 202
    app.extensions["key_cache"].poll()  # the once-a-second poll is not due during the measured request

    def no_postgres():
        raise AssertionError("the key check went to Postgres")

    monkeypatch.setattr(web_db, "connection", no_postgres)
    trips = RedisRoundTrips(monkeypatch)
    assert anon_client.post("/v1/telemetry", json=meter("m-hot", kwh=11.0), headers=bearer(token)).status_code == 202
    assert trips.count == 1


def test_the_request_path_leaves_polling_to_the_watcher(anon_client, app, auth, monkeypatch):
    """After a process's first request, the revocation poll and last-use stamps run in the watcher thread only."""
    token = auth.create_key(device="meter:m-watched", rate_limit="100000/minute")
    assert anon_client.post("/v1/telemetry", json=meter("m-watched"), headers=bearer(token)).status_code == 202
    cache = app.extensions["key_cache"]
    polls_here = []
    real_poll = type(cache)._poll_locked
    monkeypatch.setattr(cache, "_poll_locked", lambda now: polls_here.append(threading.get_ident() == test_thread)
                        or real_poll(cache, now))
    test_thread = threading.get_ident()
    deadline = time.monotonic() + 10
    second = 0
    while len(polls_here) < 2:  # requests go on over two polls of the watcher
        assert time.monotonic() < deadline, f"the watcher did not poll twice in 10 s: {polls_here}"
        second += 1
        reading = meter("m-watched", ts=datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=second))
        assert anon_client.post("/v1/telemetry", json=reading, headers=bearer(token)).status_code == 202
    assert not any(polls_here), "a request polled instead of the watcher"


def test_revocation_elsewhere_reaches_an_idle_process(app, settings, auth, anon_client):
    """The watcher drops a key revoked by another process without waiting for this process's next request."""
    from web import create_app

    token = auth.create_key(scopes=["read"])
    assert anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code == 404
    cache = app.extensions["key_cache"]
    assert hash_token(token) in cache
    other = create_app(settings).test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = bearer(auth.create_key(scopes=["admin"]))["Authorization"]
    assert other.delete(f"/v1/keys/{auth.key_id(token)}").status_code == 204
    deadline = time.monotonic() + 5
    while hash_token(token) in cache:
        assert time.monotonic() < deadline, "the revoked key is still cached after 5 s"
        time.sleep(0.05)


def test_unknown_keys_are_not_remembered(anon_client, app, auth):
    """A flood of made-up tokens leaves the cache as it was: misses are never cached."""
    token = auth.create_key(scopes=["read"])
    anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token))
    before = len(app.extensions["key_cache"])
    for _ in range(200):
        assert anon_client.get("/v1/vehicles/v1/latest", headers=bearer(new_token()[1])).status_code == 401
    assert len(app.extensions["key_cache"]) == before


def test_revocation_reaches_the_process_that_cached_the_key(app, auth, client, anon_client):
    token = auth.create_key(scopes=["read"])
    assert anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code == 404
    other = app.extensions["key_cache"]
    assert client.delete(f"/v1/keys/{auth.key_id(token)}").status_code == 204
    assert_unauthorized(anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)))
    assert other is app.extensions["key_cache"]


# -- what is logged and counted --------------------------------------------------------------------------------


def test_the_request_log_names_the_key_id_never_the_token(anon_client, auth, caplog):
    token = auth.create_key(scopes=["read"])
    with caplog.at_level(logging.INFO, logger="web.request"):
        anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token))
    records = [r for r in caplog.records if r.name == "web.request"]
    assert records and records[-1].key_id == auth.key_id(token)
    secret = token[21:]  # after eik_<16-hex-id>_
    assert all(secret not in repr(vars(r)) for r in caplog.records)


def test_refusals_are_counted_by_reason(client, anon_client, auth, redis_client):
    anon_client.get("/v1/keys")
    anon_client.get("/v1/keys", headers=bearer(auth.create_key(scopes=["read"])))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'energy_requests_rejected_total{reason="unauthorized"} 1.0' in text
    assert 'energy_requests_rejected_total{reason="forbidden"} 1.0' in text
    assert 'energy_requests_rejected_total{reason="rate_limited"} 0.0' in text


# -- hostile headers -------------------------------------------------------------------------------------------


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF), max_size=50).map("Bearer ".__add__),
    st.sampled_from(["Basic", "Digest", "Bearer", "bearer", "BEARER", "Negotiate", "eik_"]).flatmap(
        lambda scheme: st.text(max_size=100).map(lambda rest: f"{scheme} {rest}")),
    st.integers(1, 20_000).map(lambda n: "Bearer eik_" + "a" * n),
    st.just("Bearer eik_0123456789abcdef_" + "A" * 43),
))
def test_any_authorization_header_is_never_a_5xx(fake_app, header):
    client = fake_app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = header
    response = client.get("/v1/vehicles/v1/latest")
    assert response.status_code in (401, 429), (header[:80], response.data)
    assert response.is_json


def test_each_process_loads_the_usable_keys_at_once(anon_client, app, auth, monkeypatch):
    """A fleet's device keys are known on the first request: no lookup one key at a time."""
    tokens = [auth.create_key(device=f"meter:m-{i}") for i in range(20)]
    revoked = auth.create_key(scopes=["read"])
    anon_client.get("/v1/keys", headers=bearer(revoked))  # the first request loads the cache
    lookups = []
    real = web_db.connection
    monkeypatch.setattr(web_db, "connection", lambda: lookups.append(1) or real())
    for i, token in enumerate(tokens):
        assert anon_client.post("/v1/telemetry", json=meter(f"m-{i}"), headers=bearer(token)).status_code == 202
    assert lookups == []


def test_last_use_is_stamped_in_one_statement_a_minute(anon_client, app, auth, db):
    token = auth.create_key(scopes=["read"])
    anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token))
    cache = app.extensions["key_cache"]
    assert db.execute("SELECT last_used_at FROM api_keys WHERE id = %s", (auth.key_id(token),)).fetchone()[0] is None
    cache._touched_at -= cache.TOUCH_SECONDS  # a minute later
    cache.poll()
    assert db.execute("SELECT last_used_at FROM api_keys WHERE id = %s", (auth.key_id(token),)).fetchone()[0]

"""Key management: POST/GET/DELETE /v1/keys (admin only), bulk creation all or nothing, the keys CLI, the bootstrap."""

from __future__ import annotations

import json
import stat
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from common.database import release
from tests.conftest import bearer, vehicle
from web.auth import TOKEN_REGEX, hash_token


def count_keys(db) -> int:
    return db.execute("SELECT count(*) FROM api_keys").fetchone()[0]


def test_create_answers_201_with_the_token_shown_once(client, anon_client, db):
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    r = client.post("/v1/keys", json={"name": "gateway 7", "scopes": ["ingest", "read"],
                                      "rateLimit": "600/minute", "expiresAt": expires.isoformat()})
    assert r.status_code == 201
    body = r.get_json()
    assert TOKEN_REGEX.match(body["token"])
    assert (body["name"], body["scopes"], body["rateLimit"], body["device"]) == (
        "gateway 7", ["ingest", "read"], "600/minute", None)
    assert datetime.fromisoformat(body["expiresAt"]) == expires
    assert body["revokedAt"] is None and body["createdAt"]
    stored = db.execute("SELECT token_hash FROM api_keys WHERE id = %s", (body["id"],)).fetchone()[0]
    assert stored == hash_token(body["token"]) and body["token"] not in stored
    assert anon_client.post("/v1/telemetry", json=vehicle("ev-1"), headers=bearer(body["token"])).status_code == 202


def test_a_device_key_gets_ingest_and_read_by_default(client):
    r = client.post("/v1/keys", json={"name": "ev-17", "device": {"kind": "vehicle", "id": "ev-17"}})
    assert r.status_code == 201
    assert (r.get_json()["device"], r.get_json()["scopes"]) == ({"kind": "vehicle", "id": "ev-17"}, ["ingest", "read"])


@pytest.mark.parametrize(("body", "field"), [
    ({"scopes": ["read"]}, "name"),
    ({"name": "gate\u0000way", "scopes": ["read"]}, "name"),  # Postgres text refuses NUL: a 400, not a 500
    ({"name": "x", "scopes": ["root"]}, "scopes"),
    ({"name": "x", "scopes": []}, "scopes"),
    ({"name": "x", "scopes": "read"}, "scopes"),
    ({"name": "x", "scopes": ["read"], "device": {"kind": "car", "id": "a"}}, "device"),
    ({"name": "x", "scopes": ["read"], "device": {"kind": "meter", "id": "a b"}}, "device"),
    ({"name": "x", "scopes": ["read"], "rateLimit": "lots"}, "rateLimit"),
    ({"name": "x", "scopes": ["read"], "rateLimit": "0/minute"}, "rateLimit"),
    ({"name": "x", "scopes": ["read"], "expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
    ({"name": "x", "scopes": ["read"], "expiresAt": "2099-01-01T00:00:00"}, "expiresAt"),
])
def test_an_invalid_key_is_400_naming_the_field(client, db, body, field):
    before = count_keys(db)
    r = client.post("/v1/keys", json=body)
    assert r.status_code == 400
    assert field in r.get_json()["fields"]
    assert count_keys(db) == before


def test_a_key_name_with_an_unpaired_surrogate_is_a_400(client, db):
    before = count_keys(db)
    r = client.post("/v1/keys", data='{"name": "\\ud800", "scopes": ["read"]}', content_type="application/json")
    assert r.status_code == 400, r.get_json()
    assert count_keys(db) == before


def test_bulk_creation_answers_in_order(client):
    items = [{"name": f"ev-{i}", "device": {"kind": "vehicle", "id": f"ev-{i}"}} for i in range(250)]
    r = client.post("/v1/keys", json=items)
    assert r.status_code == 201
    created = r.get_json()
    assert [k["device"]["id"] for k in created] == [f"ev-{i}" for i in range(250)]
    assert len({k["token"] for k in created}) == 250


def test_bulk_creation_is_all_or_nothing(client, db):
    before = count_keys(db)
    items = [{"name": f"ev-{i}", "device": {"kind": "vehicle", "id": f"ev-{i}"}} for i in range(5)]
    items[3]["device"]["kind"] = "bicycle"
    r = client.post("/v1/keys", json=items)
    assert r.status_code == 400
    assert [p["index"] for p in r.get_json()["items"]] == [3]
    assert client.post("/v1/keys", json=[{"name": "x", "scopes": ["read"]}] * 1001).status_code == 400
    assert client.post("/v1/keys", json=[]).status_code == 400
    assert count_keys(db) == before


def test_bulk_creation_rolls_back_on_a_database_failure(client, db, monkeypatch):
    """A failure half way (here: the 3rd insert) leaves none of the batch behind."""
    from web import keys

    before = count_keys(db)
    real = keys.new_token
    calls = {"n": 0}

    def third_collides():
        calls["n"] += 1
        key_id, token = real()
        return ("0" * 16, token) if calls["n"] >= 2 else (key_id, token)  # the 3rd repeats the 2nd's id

    monkeypatch.setattr(keys, "new_token", third_collides)
    r = client.post("/v1/keys", json=[{"name": f"k{i}", "scopes": ["read"]} for i in range(4)])
    assert r.status_code >= 400
    assert count_keys(db) == before


def test_list_is_paginated_and_shows_no_secret(client, auth):
    tokens = [auth.create_key(scopes=["read"]) for _ in range(5)]
    seen, after = [], ""
    while True:
        r = client.get(f"/v1/keys?limit=2&after={after}")
        assert r.status_code == 200
        page = r.get_json()
        assert len(page["keys"]) <= 2
        seen += page["keys"]
        if page["next"] is None:
            break
        after = page["next"]
    ids = [k["id"] for k in seen]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert {auth.key_id(t) for t in tokens} <= set(ids)
    text = json.dumps(seen)
    assert all("token" not in k for k in seen) and not any(t[21:] in text for t in tokens)
    assert client.get("/v1/keys?limit=0").status_code == 400


def test_revoke_answers_204_and_the_key_stops_working(client, anon_client, auth):
    token = auth.create_key(scopes=["read"])
    assert anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code == 404
    assert client.delete(f"/v1/keys/{auth.key_id(token)}").status_code == 204
    assert anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code == 401
    assert client.delete(f"/v1/keys/{auth.key_id(token)}").status_code == 204  # again: still revoked
    assert client.delete("/v1/keys/0123456789abcdef").status_code == 404
    assert client.delete("/v1/keys/nonsense").status_code == 404


def test_key_management_is_admin_only(anon_client, auth):
    for scope in ("ingest", "read", "metrics"):
        headers = bearer(auth.create_key(scopes=[scope]))
        for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("DELETE", "/v1/keys/0123456789abcdef")):
            r = anon_client.open(path, method=method, headers=headers, json={"name": "x", "scopes": ["admin"]})
            assert (r.status_code, r.get_json()["requiredScope"]) == (403, "admin")


# -- CLI -------------------------------------------------------------------------------------------------------


def test_cli_create_json_prints_exactly_one_object_with_the_token(app, anon_client):
    result = app.test_cli_runner().invoke(args=[
        "keys", "create", "--name", "ev-17", "--scope", "ingest", "--device", "vehicle:ev-17",
        "--rate-limit", "120/minute", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert (created["device"], created["rateLimit"], created["scopes"]) == (
        {"kind": "vehicle", "id": "ev-17"}, "120/minute", ["ingest"])
    assert anon_client.post("/v1/telemetry", json=vehicle("ev-17"), headers=bearer(created["token"])).status_code == 202


def test_cli_list_and_revoke(app, anon_client, auth):
    token = auth.create_key(scopes=["read"])
    runner = app.test_cli_runner()
    listed = json.loads(runner.invoke(args=["keys", "list", "--json"]).stdout)
    assert auth.key_id(token) in {k["id"] for k in listed}
    assert token[21:] not in json.dumps(listed)
    assert anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code == 404
    result = runner.invoke(args=["keys", "revoke", auth.key_id(token)])
    assert result.exit_code == 0, result.output
    app.extensions["key_cache"].poll()  # the next once-a-second poll, now
    assert anon_client.get("/v1/vehicles/v1/latest", headers=bearer(token)).status_code == 401
    assert runner.invoke(args=["keys", "revoke", "0123456789abcdef"]).exit_code != 0


def test_cli_refuses_a_bad_key_without_a_traceback(app):
    result = app.test_cli_runner().invoke(args=["keys", "create", "--name", "x"])
    assert result.exit_code == 2
    assert "scopes" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def empty_settings(settings, servers):
    """Settings of a fresh, migrated database with no key at all."""
    import dataclasses

    dbname = f"energy_test_keys_{uuid.uuid4().hex[:8]}"
    fresh = dataclasses.replace(settings, database_url=make_conninfo(settings.database_url, dbname=dbname))
    release(fresh)
    yield fresh
    with psycopg.connect(make_conninfo(settings.database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def test_bootstrap_writes_an_admin_key_once_with_mode_0600(empty_settings, redis_client, tmp_path):
    from web import create_app

    app = create_app(empty_settings)
    target = tmp_path / ".data" / "admin.key"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["keys", "bootstrap-admin", "--file", str(target)])
    assert result.exit_code == 0, result.output
    assert str(target) in result.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    token = target.read_text().strip()
    client = app.test_client()
    assert client.get("/v1/keys", headers=bearer(token)).status_code == 200
    again = runner.invoke(args=["keys", "bootstrap-admin", "--file", str(target)])
    assert again.exit_code == 0 and "exists" in again.stdout
    assert target.read_text().strip() == token
    assert len(client.get("/v1/keys", headers=bearer(token)).get_json()["keys"]) == 1

"""GET /v1/conflicts is admin-only although it is a GET (the identity layer's default would let `read` in)."""

import pytest

pytest.importorskip("web.auth", reason="the identity layer (issue 11) has not landed")


def test_a_read_key_gets_403_and_an_admin_key_200(anon_client, auth):
    read = auth.create_key(scopes=["read"])
    r = anon_client.get("/v1/conflicts", headers=auth.headers(read))
    assert r.status_code == 403
    assert r.get_json()["error"] == "forbidden"
    assert r.get_json().get("requiredScope") == "admin"
    admin = auth.create_key(scopes=["admin"])
    assert anon_client.get("/v1/conflicts", headers=auth.headers(admin)).status_code == 200
    assert anon_client.get("/v1/conflicts").status_code == 401
    # The history of a device is a plain read.
    assert anon_client.get("/v1/vehicles/v1/readings", headers=auth.headers(read)).status_code == 200

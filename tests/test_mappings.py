"""Mappings CRUD through HTTP on the real services: which meter feeds which vehicle."""

import pytest


def put(client, vehicle_id="v1", meter_id="m1"):
    return client.post("/v1/mappings", json={"vehicleId": vehicle_id, "meterId": meter_id})


def test_new_mapping_is_201_with_the_mapping(client, db):
    r = put(client)
    assert r.status_code == 201
    body = r.get_json()
    assert (body["vehicleId"], body["meterId"]) == ("v1", "m1")
    assert body["createdAt"] and body["updatedAt"]
    assert db.execute("SELECT vehicle_id, meter_id FROM vehicle_meter_map").fetchall() == [("v1", "m1")]


def test_replacing_the_meter_is_200_and_keeps_one_row(client, db):
    first = put(client, "v1", "m1").get_json()
    r = put(client, "v1", "m2")
    assert r.status_code == 200
    body = r.get_json()
    assert body["meterId"] == "m2"
    assert body["createdAt"] == first["createdAt"]
    assert db.execute("SELECT vehicle_id, meter_id FROM vehicle_meter_map").fetchall() == [("v1", "m2")]


def test_repeating_the_same_mapping_is_200_and_changes_nothing(client):
    first = put(client).get_json()
    r = put(client)
    assert r.status_code == 200
    assert r.get_json() == first


def test_get_mapping(client):
    put(client, "v1", "m1")
    r = client.get("/v1/mappings/v1")
    assert r.status_code == 200
    assert r.get_json()["meterId"] == "m1"


def test_get_unknown_mapping_is_404_json(client, db):
    r = client.get("/v1/mappings/nobody")
    assert r.status_code == 404
    assert r.get_json()["error"] == "not_found"


def test_list_the_vehicles_of_a_meter(client):
    for vehicle_id, meter_id in [("v2", "m1"), ("v1", "m1"), ("v3", "m2")]:
        put(client, vehicle_id, meter_id)
    r = client.get("/v1/mappings?meterId=m1")
    assert r.status_code == 200
    body = r.get_json()
    assert body["meterId"] == "m1"
    assert [m["vehicleId"] for m in body["mappings"]] == ["v1", "v2"]
    assert client.get("/v1/mappings?meterId=m9").get_json()["mappings"] == []


def test_a_remapped_vehicle_leaves_its_old_meter(client):
    put(client, "v1", "m1")
    put(client, "v1", "m2")
    assert client.get("/v1/mappings?meterId=m1").get_json()["mappings"] == []
    assert [m["vehicleId"] for m in client.get("/v1/mappings?meterId=m2").get_json()["mappings"]] == ["v1"]


def test_delete_is_204_then_404(client):
    put(client)
    r = client.delete("/v1/mappings/v1")
    assert r.status_code == 204
    assert r.data == b""
    assert client.get("/v1/mappings/v1").status_code == 404
    r = client.delete("/v1/mappings/v1")
    assert r.status_code == 404
    assert r.get_json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        ({"meterId": "m1"}, "vehicleId"),
        ({"vehicleId": "v1"}, "meterId"),
        ({"vehicleId": "bad id", "meterId": "m1"}, "vehicleId"),
        ({"vehicleId": "v1", "meterId": "x" * 65}, "meterId"),
        ({"vehicleId": 7, "meterId": "m1"}, "vehicleId"),
        ({"vehicleId": "v1", "meterId": None}, "meterId"),
    ],
)
def test_invalid_mapping_is_400_naming_the_field(client, db, body, bad):
    r = client.post("/v1/mappings", json=body)
    assert r.status_code == 400
    assert bad in r.get_json()["fields"]
    assert db.execute("SELECT count(*) FROM vehicle_meter_map").fetchone() == (0,)


def test_unknown_fields_are_ignored(client):
    r = client.post("/v1/mappings", json={"vehicleId": "v1", "meterId": "m1", "note": "depot 3"})
    assert r.status_code == 201
    assert "note" not in r.get_json()


@pytest.mark.parametrize(
    ("data", "content_type", "status", "error"),
    [
        (b"{", "application/json", 400, "malformed_json"),
        (b"[]", "application/json", 400, "invalid_body"),
        (b'{"vehicleId": "v1", "meterId": "m1"}', "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_bad_bodies_are_json_errors(client, data, content_type, status, error):
    r = client.post("/v1/mappings", data=data, content_type=content_type)
    assert r.status_code == status
    assert r.get_json()["error"] == error


@pytest.mark.parametrize("path", ["/v1/mappings/bad%20id", "/v1/mappings/" + "x" * 65])
def test_bad_vehicle_id_in_the_path_is_400_naming_it(client, path):
    for method in (client.get, client.delete):
        r = method(path)
        assert r.status_code == 400
        assert r.get_json()["parameter"] == "vehicleId"


@pytest.mark.parametrize(("query", "error"), [("", "missing_parameter"), ("?meterId=a%2Fb", "invalid_parameter"),
                                              ("?meterId=", "invalid_parameter")])
def test_listing_needs_a_valid_meter_id(client, query, error):
    r = client.get("/v1/mappings" + query)
    assert r.status_code == 400
    body = r.get_json()
    assert (body["error"], body["parameter"]) == (error, "meterId")

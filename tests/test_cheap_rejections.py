"""An invalid batch is refused cheaply: the first 100 bad items named, all of them counted (invalidCount)."""

from __future__ import annotations

from tests.conftest import keyed_client, meter, vehicle
from web.telemetry import MAX_REPORTED_ITEMS


def _bad(i: int) -> dict:
    """A different kind of bad item each time: a string number, a range, an id, a timestamp, a shape."""
    return [
        {**meter(f"m{i}"), "voltage": "230"},
        {**vehicle(f"v{i}"), "soc": 101},
        {**meter(f"m{i}"), "meterId": "not an id"},
        {**vehicle(f"v{i}"), "timestamp": "yesterday"},
        {"meterId": f"m{i}", "vehicleId": f"v{i}"},
    ][i % 5]


def test_an_all_invalid_batch_names_the_first_100_and_counts_all(fake_client):
    response = fake_client.post("/v1/telemetry", json=[_bad(i) for i in range(5000)])
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_batch"
    assert body["invalidCount"] == 5000
    assert [item["index"] for item in body["items"]] == list(range(MAX_REPORTED_ITEMS))
    assert "voltage" in body["items"][0]["fields"] and "soc" in body["items"][1]["fields"]
    assert "5000 of 5000" in body["message"]
    assert len(response.data) < 40_000  # was 2 MB with every item listed


def test_marshmallow_explains_only_the_items_it_lists(fake_app, monkeypatch, admin_token):
    parser = fake_app.extensions["reading_parser"]
    explained = []
    original = parser._schema_load
    monkeypatch.setattr(parser, "_schema_load", lambda item: explained.append(1) or original(item))
    response = keyed_client(fake_app, admin_token).post("/v1/telemetry", json=[_bad(i) for i in range(3000)])
    assert response.get_json()["invalidCount"] == 3000
    assert len(explained) == MAX_REPORTED_ITEMS


def test_a_few_bad_items_among_good_ones_are_all_listed(fake_client, redis_client):
    batch = [meter(f"m{i}") for i in range(300)]
    for i in (7, 150, 299):
        batch[i] = _bad(i)
    body = fake_client.post("/v1/telemetry", json=batch).get_json()
    assert body["invalidCount"] == 3
    assert [item["index"] for item in body["items"]] == [7, 150, 299]
    assert "listed" not in body["message"]


def test_bad_items_past_the_first_100_are_counted_even_among_good_ones(fake_client):
    batch = [_bad(i) if i % 2 else meter(f"m{i}") for i in range(1000)]
    body = fake_client.post("/v1/telemetry", json=batch).get_json()
    assert body["invalidCount"] == 500
    assert len(body["items"]) == MAX_REPORTED_ITEMS
    assert body["items"][-1]["index"] == 199

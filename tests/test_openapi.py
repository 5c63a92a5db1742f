"""The OpenAPI document: valid OpenAPI 3, covering every route, and schemathesis finds no failure against it."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import ignored_auth

from common.database import load_sql
from common.settings import Settings
from tests.conftest import bearer, meter, vehicle
from web import create_app
from web.auth import hash_token, new_token
from web.openapi import OPERATIONS, UNDOCUMENTED_ENDPOINTS, build_spec


@pytest.fixture
def document(fake_client):
    r = fake_client.get("/openapi.json")
    assert r.status_code == 200
    return r.get_json()


def test_the_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_is_documented_explicitly(fake_app, document):
    """A new route must get its operation in web/openapi.py OPERATIONS (responses and schemas)."""
    missing = []
    for rule in fake_app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS:
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if method.lower() not in OPERATIONS.get(rule.endpoint, {}):
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert missing == []
    assert len(document["paths"]) == len({r.rule for r in fake_app.url_map.iter_rules()} - {"/static/<path:filename>"})


def test_schemas_come_from_marshmallow(document):
    schemas = document["components"]["schemas"]
    performance = schemas["Performance"]
    assert set(performance["required"]) >= {"vehicleId", "meterId", "windowHours", "acKwh", "dcKwh",
                                            "efficiencyRatio", "avgBatteryTemp", "fromTs", "toTs"}
    assert performance["properties"]["efficiencyRatio"]["nullable"] is True
    assert schemas["MeterReading"]["properties"]["meterId"]["pattern"]
    params = document["paths"]["/v1/analytics/performance/{vehicleId}"]["get"]["parameters"]
    hours = next(p for p in params if p["name"] == "hours")
    assert hours["schema"]["minimum"] == 1
    assert hours["schema"]["maximum"] == 24 * 90  # the default retention period


def test_docs_page_is_html_pointing_at_the_document(fake_client):
    r = fake_client.get("/docs")
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    assert b"/openapi.json" in r.data
    assert b"SwaggerUIBundle" in r.data


# -- schemathesis: every operation of the app's own document, on the real services --------------------------------

# The document is built at import (no server is touched) so that schemathesis can make one test per operation;
# the requests go to the `app` fixture, on the real services. test_the_tested_document_is_the_served_one ties
# the two together.
DOCUMENT = build_spec(create_app(Settings()))
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_tested_document_is_the_served_one(document):
    assert document == DOCUMENT


# Operations whose acceptance depends on rules that an OpenAPI schema cannot state: a reading's timestamp must
# lie in the retention window around the server's clock; `to` must lie between 1970 and 9999. For these, a
# schema-valid request may rightly get a 400, so schemathesis's "schema-valid data is accepted" check is off.
CLOCK_DEPENDENT = {("POST", "/v1/telemetry"), ("GET", "/v1/analytics/performance/{vehicleId}")}
# The history listings: `from` before `to`, at most 10,000 buckets, a known IANA zone, and only a cursor this
# server signed for the same listing: a schema-valid request may rightly get a 400 there too.
CLOCK_DEPENDENT |= {("GET", "/v1/vehicles/{vehicleId}/readings"), ("GET", "/v1/meters/{meterId}/readings"),
                    ("GET", "/v1/conflicts")}
# A key's expiresAt must lie in the future and a device key may hold only ingest and read: the same holds there.
CLOCK_DEPENDENT |= {("POST", "/v1/keys")}
# The fleet endpoints: `to` a whole hour inside the calendar, a window inside the retention period, only a cursor
# this server signed for the same ranking or kind.
CLOCK_DEPENDENT |= {("GET", "/v1/analytics/fleet"), ("GET", "/v1/analytics/vehicles"), ("GET", "/v1/devices/silent")}


@pytest.fixture
def seeded_app(app, client, db):
    """The app with the document's example devices known, so that the examples get full answers to check."""
    now = datetime.now(UTC).replace(microsecond=0)
    readings = [meter("meter-1", kwh=100.0 + i, ts=now - timedelta(minutes=30 - 10 * i)) for i in range(3)]
    readings += [vehicle(v, kwh=50.0 + i, ts=now - timedelta(minutes=30 - 10 * i))
                 for i in range(3) for v in ("vehicle-1", "vehicle-2")]
    assert client.post("/v1/telemetry", json=readings).status_code == 202
    assert client.post("/v1/mappings", json={"vehicleId": "vehicle-1", "meterId": "meter-1"}).status_code == 201
    with db.cursor() as cur:
        cur.executemany("INSERT INTO meter_readings VALUES (%s, %s, %s, %s)",
                        [(r["meterId"], r["timestamp"], r["kwhConsumedAc"], r["voltage"]) for r in readings[:3]])
        cur.executemany("INSERT INTO vehicle_readings VALUES (%s, %s, %s, %s, %s)",
                        [(r["vehicleId"], r["timestamp"], r["soc"], r["kwhDeliveredDc"], r["batteryTemp"])
                         for r in readings[3:]])
    return app


def test_the_examples_get_full_answers(seeded_app, client):
    assert client.get("/v1/vehicles/latest?ids=vehicle-1,vehicle-2,vehicle-404").get_json()["missing"] == [
        "vehicle-404"]
    body = client.get("/v1/analytics/performance/vehicle-1").get_json()
    assert (body["acKwh"], body["dcKwh"], body["efficiencyRatio"]) == (2.0, 2.0, 1.0)


# Schemathesis asks for the token while it generates cases, before any fixture runs: the token is
# made here and its key stored by the schemathesis_key fixture.
_KEY_ID, _TOKEN = new_token()


@pytest.fixture(scope="module")
def schemathesis_key(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(load_sql("keys/insert"), {
            "id": _KEY_ID, "name": "tests: schemathesis", "token_hash": hash_token(_TOKEN), "scopes": ["admin"],
            "device_kind": None, "device_id": None, "rate_limit": None, "expires_at": None})


@schema.auth()
class AdminKey:
    """Schemathesis sends an admin key (its own checks then also try requests without it or with a bad one)."""

    def get(self, case, context):
        return _TOKEN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), **bearer(data)}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, seeded_app, schemathesis_key):
    """No 5xx, and every answer (status, content type, body) is the one the document describes (with a key)."""
    # ignored_auth re-sends the case without the key through a transport that does not carry the
    # WSGI app (schemathesis 4.32 with from_dict); tests/test_auth.py holds every route to 401 instead.
    excluded = [ignored_auth]
    if (case.method.upper(), case.path) in CLOCK_DEPENDENT:
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(app=seeded_app, excluded_checks=excluded)

"""The dashboard's server side (a page and files, no CDN), /docs from the pinned package, and GET /v1/vehicles."""

from __future__ import annotations

import re

from tests.conftest import minutes_ago, vehicle


def test_dashboard_page_loads_only_this_origins_files(fake_client):
    r = fake_client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "https://" not in html and "http://" not in html
    sources = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any("uplot-1.6.32/uPlot.iife.min.js" in s for s in sources)
    for source in sources:
        assert fake_client.get(source).status_code == 200, source
    policy = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-eval" not in policy
    assert r.headers["Referrer-Policy"] == "no-referrer"


def test_sign_in_form_posts_so_a_key_never_lands_in_a_url(fake_client):
    html = fake_client.get("/").get_data(as_text=True)
    form = re.search(r"<form[^>]*id=\"sign-in-form\"[^>]*>", html).group(0)
    assert 'method="post"' in form
    assert 'type="password"' in html
    assert fake_client.post("/", data={"key": "secret"}).status_code == 405


def test_vendored_chart_library_keeps_its_licence_and_version(fake_client):
    licence = fake_client.get("/static/vendor/uplot-1.6.32/LICENSE").get_data(as_text=True)
    assert "MIT" in licence or "Permission is hereby granted" in licence
    script = fake_client.get("/static/vendor/uplot-1.6.32/uPlot.iife.min.js").get_data(as_text=True)
    assert script.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")


def test_docs_serve_swagger_ui_from_the_pinned_package_not_a_cdn(fake_client):
    html = fake_client.get("/docs").get_data(as_text=True)
    assert "cdn" not in html.lower() and "https://" not in html
    for asset in ("/docs/ui/swagger-ui.css", "/docs/ui/swagger-ui-bundle.js"):
        r = fake_client.get(asset)
        assert r.status_code == 200 and len(r.data) > 1000, asset
    missing = fake_client.get("/docs/ui/no-such-file.js")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert fake_client.get("/docs/ui/../__init__.py").status_code == 404


def _store(client, db, ids):
    readings = [vehicle(v, soc=10.0 + i, ts=minutes_ago(1)) for i, v in enumerate(ids)]
    assert client.post("/v1/telemetry", json=readings).status_code == 202
    db.execute(
        "INSERT INTO vehicle_latest (vehicle_id, ts, soc, kwh_delivered_dc, battery_temp) "
        "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float8[])",
        ([r["vehicleId"] for r in readings], [r["timestamp"] for r in readings], [r["soc"] for r in readings],
         [r["kwhDeliveredDc"] for r in readings], [r["batteryTemp"] for r in readings]))
    return readings


def test_vehicles_listing_pages_in_id_order_with_the_mapped_meter(client, db):
    ids = [f"v-{i:03d}" for i in range(7)]
    readings = _store(client, db, list(reversed(ids)))
    assert client.post("/v1/mappings", json={"vehicleId": "v-002", "meterId": "m-2"}).status_code == 201
    seen, after = [], None
    while True:
        r = client.get("/v1/vehicles?limit=3" + (f"&after={after}" if after else ""))
        assert r.status_code == 200
        body = r.get_json()
        seen += body["vehicles"]
        after = body["next"]
        if after is None:
            break
    assert [v["vehicleId"] for v in seen] == ids
    by_id = {r["vehicleId"]: r for r in readings}
    for v in seen:
        expected = {**by_id[v["vehicleId"]], "meterId": "m-2" if v["vehicleId"] == "v-002" else None}
        assert v == expected


def test_vehicles_listing_rejects_bad_parameters_with_a_400_naming_them(fake_client):
    for query, parameter in (("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"),
                             ("after=", "after"), ("after=bad%20id", "after")):
        r = fake_client.get(f"/v1/vehicles?{query}")
        assert r.status_code == 400, query
        assert r.get_json()["parameter"] == parameter

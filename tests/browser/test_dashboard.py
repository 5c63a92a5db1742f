"""The dashboard in headless Chromium against the real engine with a simulated fleet."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from simulator.engine_keys import create_key
from tests.browser.conftest import FLEET_SIZE, HISTORY_HOURS, screenshot

pytestmark = pytest.mark.e2e
TIMEOUT_MS = 20_000
NO_VALUE = "\u2013"  # the en dash the page shows for a value it does not have


def sign_in(page, engine, key=None):
    """Open the dashboard and sign in; wait for the fleet table's rows."""
    page.goto(engine.url + "/")
    page.fill("#key", key if key is not None else (engine.read_key or "any-key-before-identity-lands"))
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#fleet-rows tr", timeout=TIMEOUT_MS)


def efficiency_cells_filled(page) -> bool:
    return page.eval_on_selector_all(
        "#fleet-rows td.efficiency", "cells => cells.length > 0 && cells.every(c => c.textContent !== '…')")


def history_route_exists(engine, vehicle_id: str) -> bool:
    """Tell whether this engine has the history API (issue 14's GET /v1/vehicles/<id>/readings)."""
    request = urllib.request.Request(f"{engine.url}/v1/vehicles/{vehicle_id}/readings",
                                     headers={"Authorization": f"Bearer {engine.read_key}"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        return not (exc.code == 404 and b"requested URL was not found" in exc.read())


def test_fleet_table_shows_every_simulated_vehicle_with_its_soc(engine, page):
    sign_in(page, engine)
    ids = [v for v, _ in engine.simulation.device_ids()]
    latest = {r["vehicleId"]: r for r in engine.api(f"/v1/vehicles/latest?ids={','.join(ids)}")["vehicles"]}
    rows = page.eval_on_selector_all(
        "#fleet-rows tr", "rows => rows.map(r => [r.dataset.vehicleId, r.querySelector('.soc-value').textContent])")
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert len(rows) == FLEET_SIZE
    for vehicle_id, soc_text in rows:
        assert soc_text == f"{latest[vehicle_id]['soc']:.1f} %"
    assert page.text_content("#fleet-count") == f"{FLEET_SIZE} of {FLEET_SIZE} vehicles"
    # The key is in this tab's sessionStorage, and never in the URL.
    assert page.evaluate("sessionStorage.getItem('energyDashboard.key')")
    assert "key" not in page.url
    page.wait_for_function("document.querySelectorAll('#fleet-rows td.efficiency').length > 0")
    screenshot(page, "fleet")


def test_totals_card_is_filled_from_the_fleet_endpoint(engine, page):
    # The backfill is over: wait until the rollups hold all of it (no pending mark), then compare.
    def figures():
        return {k: v for k, v in engine.api("/v1/analytics/fleet?hours=24").items() if k != "asOf"}

    deadline = time.monotonic() + 60
    while True:
        fleet = figures()
        if fleet["dcKwh"] and figures() == fleet:
            break
        assert time.monotonic() < deadline, engine.logs()
        time.sleep(0.5)
    sign_in(page, engine)
    page.wait_for_function("document.getElementById('total-ac').textContent !== '\u2013'", timeout=TIMEOUT_MS)
    assert page.text_content("#total-ac") == f"{fleet['acKwh']:.1f} kWh"
    assert page.text_content("#total-dc") == f"{fleet['dcKwh']:.1f} kWh"
    assert page.text_content("#total-eff") == f"{fleet['efficiencyRatio'] * 100:.1f} %"
    assert page.is_hidden("#totals-note")
    screenshot(page, "fleet-totals")


def test_sort_by_efficiency_orders_rows_by_the_apis_numbers(engine, page):
    sign_in(page, engine)
    page.wait_for_function(
        "[...document.querySelectorAll('#fleet-rows td.efficiency')].every(c => c.textContent !== '…')",
        timeout=TIMEOUT_MS)
    page.click("th[data-sort=efficiency] button")
    assert page.get_attribute("th[data-sort=efficiency]", "aria-sort") == "ascending"
    shown = page.eval_on_selector_all(
        "#fleet-rows tr", "rows => rows.map(r => [r.dataset.vehicleId, r.querySelector('td.efficiency').textContent])")
    ratios = engine.efficiency_ratios()
    assert [v for v, _ in shown] == sorted(ratios, key=lambda v: (ratios[v] is None, ratios[v] or 0, v))
    for vehicle_id, text in shown:
        ratio = ratios[vehicle_id]
        assert text == (NO_VALUE if ratio is None else f"{ratio * 100:.1f} %")
    # The simulated charging efficiency is 0.85..0.95; the scripted meter reset can only lower a ratio.
    assert any(ratios[v] is not None and 0.85 <= ratios[v] <= 0.95 for v in ratios)
    page.click("th[data-sort=efficiency] button")
    assert page.get_attribute("th[data-sort=efficiency]", "aria-sort") == "descending"
    screenshot(page, "fleet-sorted-by-efficiency")


def test_silent_vehicle_is_marked(engine, page):
    sign_in(page, engine)
    (silent_id,) = engine.simulation.silent_vehicle_ids()
    row = page.locator(f"#fleet-rows tr[data-vehicle-id='{silent_id}']")
    assert "silent" in row.get_attribute("class")
    assert row.locator(".badge.silent").count() == 1
    others = page.locator("#fleet-rows tr.silent")
    assert others.count() == 1
    assert page.text_content("#silent-count") == "1"


def test_search_filters_the_table(engine, page):
    sign_in(page, engine)
    page.fill("#search", "vehicle-00003")
    rows = page.eval_on_selector_all("#fleet-rows tr", "rows => rows.map(r => r.dataset.vehicleId)")
    assert rows == ["sim-vehicle-00003"]
    page.fill("#search", "nothing-like-this")
    assert page.locator("#fleet-rows tr").count() == 0
    assert "No vehicle id contains" in page.text_content("#fleet-empty")


def test_vehicle_page_draws_the_apis_numbers(engine, page):
    sign_in(page, engine)
    vehicle_id = next(v for v, _ in engine.simulation.device_ids() if v not in engine.simulation.silent_vehicle_ids())
    page.click(f"#fleet-rows tr[data-vehicle-id='{vehicle_id}'] a")
    page.wait_for_selector("#vehicle:not([hidden])")
    latest = engine.api(f"/v1/vehicles/{vehicle_id}/latest")
    page.wait_for_function("(soc) => document.getElementById('v-soc').textContent === soc",
                           arg=f"{latest['soc']:.1f} %", timeout=TIMEOUT_MS)
    performance = engine.api(f"/v1/analytics/performance/{vehicle_id}?hours=24")
    page.wait_for_function("(none) => document.getElementById('v-eff').textContent !== none", arg=NO_VALUE,
                           timeout=TIMEOUT_MS)
    assert page.text_content("#v-eff") == f"{performance['efficiencyRatio'] * 100:.1f} %"
    assert page.text_content("#v-meter") == vehicle_id.replace("vehicle", "meter")
    assert page.is_hidden("#vehicle-silent")
    if history_route_exists(engine, vehicle_id):
        page.wait_for_function("document.getElementById('chart-soc').dataset.points > 0", timeout=TIMEOUT_MS)
        points = int(page.get_attribute("#chart-soc", "data-points"))
        last_soc = float(page.get_attribute("#chart-soc", "data-last-soc"))
        window = page.evaluate("window.dashboard.chartWindow")
        readings = engine.api(f"/v1/vehicles/{vehicle_id}/readings?limit=10000&from={quote(window['from'])}"
                              f"&to={quote(window['to'])}")["readings"]
        assert points == len(readings) and HISTORY_HOURS * 60 - 30 <= points <= HISTORY_HOURS * 60 + 1
        assert last_soc == readings[-1]["soc"]
        assert page.evaluate("window.dashboard.charts.soc.data[1].length") == points
    else:
        # Until the history API lands (issue 14), the chart says why it is empty instead of drawing a guess.
        page.wait_for_selector("#chart-soc-note:not([hidden])", timeout=TIMEOUT_MS)
        assert "does not have" in page.text_content("#chart-soc-note")
        assert page.get_attribute("#chart-soc", "data-points") == "0"
    screenshot(page, "vehicle")


def test_phone_sized_screen_shows_the_fleet(engine, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, device_scale_factor=2,
                                  bypass_csp=True)
    page = context.new_page()
    try:
        sign_in(page, engine)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        assert page.locator("#fleet-rows tr").count() == FLEET_SIZE
        screenshot(page, "fleet-phone")
    finally:
        context.close()


def test_sign_in_refuses_an_unknown_key_and_a_key_without_read(engine, page):
    if not engine.identity:
        pytest.skip("this engine has no keys yet (issue 11): every key is accepted")
    page.goto(engine.url + "/")
    page.fill("#key", "not-a-key")
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#sign-in-error:not([hidden])", timeout=TIMEOUT_MS)
    assert "refused" in page.text_content("#sign-in-error")
    ingest_only = create_key(engine.env, "browser-test-ingest-only", "ingest")
    page.fill("#key", ingest_only)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_function("document.getElementById('sign-in-error').textContent.includes('read')",
                           timeout=TIMEOUT_MS)
    assert page.is_hidden("#fleet")
    assert page.evaluate("sessionStorage.getItem('energyDashboard.key')") is None
    screenshot(page, "sign-in-refused")


def test_sign_out_forgets_the_key(engine, page):
    sign_in(page, engine)
    page.click("#sign-out")
    page.wait_for_selector("#sign-in:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('energyDashboard.key')") is None
    screenshot(page, "sign-in")

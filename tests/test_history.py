"""GET /v1/vehicles/<id>/readings and /v1/meters/<id>/readings: keyset pages, buckets, CSV, bad parameters."""

import csv
import io
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import iso

# Yesterday 00:00 UTC: inside the partitions of the test database, in the past.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def add_meter(db, meter_id, points):
    """Insert (ts, kwh, voltage) readings of a meter straight into history."""
    with db.cursor() as cur:
        cur.executemany("INSERT INTO meter_readings VALUES (%s, %s, %s, %s)",
                        [(meter_id, ts, kwh, volt) for ts, kwh, volt in points])


def add_vehicle(db, vehicle_id, points):
    """Insert (ts, soc, kwh, battery temp) readings of a vehicle straight into history."""
    with db.cursor() as cur:
        cur.executemany("INSERT INTO vehicle_readings VALUES (%s, %s, %s, %s, %s)",
                        [(vehicle_id, ts, soc, kwh, temp) for ts, soc, kwh, temp in points])


def add_minutes(db, kind, device_id, start, count, step=timedelta(minutes=1)):
    """Insert ``count`` readings a minute apart with a rising counter, in one statement."""
    table, values = (("vehicle_readings", "50, n * 0.01, 20 + n %% 7") if kind == "vehicle"
                     else ("meter_readings", "n * 0.01, 230 + n %% 3"))
    db.execute(f"INSERT INTO {table} SELECT %s, %s + n * %s, {values} FROM generate_series(0, %s - 1) n",
               (device_id, start, step, count))


def get(client, path, expect=200, **query):
    r = client.get(path, query_string=query)
    assert r.status_code == expect, r.get_data(as_text=True)[:500]
    return r.get_json() if r.mimetype == "application/json" else r


def all_pages(client, path, on_page=None, **query):
    """Follow `next` to the end; return every reading and the number of pages."""
    readings, pages, cursor = [], 0, None
    while True:
        body = get(client, path, **query, **({"cursor": cursor} if cursor else {}))
        readings += body["readings"]
        pages += 1
        cursor = body["next"]
        if on_page:
            on_page(pages)
        if cursor is None:
            return readings, pages


# -- raw pages ------------------------------------------------------------------------------------------------------


def test_a_page_has_the_api_field_names_oldest_first(client, db):
    add_vehicle(db, "v1", [(DAY + timedelta(minutes=2), 61.0, 10.5, 30.0),
                           (DAY + timedelta(minutes=1), 60.0, 10.0, 29.5)])
    body = get(client, "/v1/vehicles/v1/readings")
    assert body == {"vehicleId": "v1", "next": None, "readings": [
        {"vehicleId": "v1", "timestamp": iso(DAY + timedelta(minutes=1)), "soc": 60.0, "kwhDeliveredDc": 10.0,
         "batteryTemp": 29.5},
        {"vehicleId": "v1", "timestamp": iso(DAY + timedelta(minutes=2)), "soc": 61.0, "kwhDeliveredDc": 10.5,
         "batteryTemp": 30.0},
    ]}
    add_meter(db, "m1", [(DAY, 5.0, 231.0)])
    assert get(client, "/v1/meters/m1/readings")["readings"] == [
        {"meterId": "m1", "timestamp": iso(DAY), "kwhConsumedAc": 5.0, "voltage": 231.0}]


def test_the_window_is_from_exclusive_to_inclusive(client, db):
    add_meter(db, "m1", [(DAY + timedelta(minutes=m), m, 230.0) for m in range(5)])
    body = get(client, "/v1/meters/m1/readings", **{"from": iso(DAY), "to": iso(DAY + timedelta(minutes=3))})
    assert [r["kwhConsumedAc"] for r in body["readings"]] == [1, 2, 3]


def test_25000_readings_in_pages_of_1000_come_back_exactly_once_while_new_ones_arrive(client, db):
    add_minutes(db, "meter", "m1", DAY - timedelta(days=20), 25_000)
    expected = [iso(DAY - timedelta(days=20) + timedelta(minutes=n)) for n in range(25_000)]
    added = []

    def insert_between_pages(page):
        # New readings land after everything, and between readings not yet paged (30 s after a whole minute).
        ts_late = DAY - timedelta(days=20) + timedelta(minutes=24_000 - page, seconds=30)
        ts_new = DAY - timedelta(days=20) + timedelta(minutes=25_000 + page)
        add_meter(db, "m1", [(ts_late, 0.0, 230.0), (ts_new, 0.0, 230.0)])
        added.extend([iso(ts_late), iso(ts_new)])

    readings, pages = all_pages(client, "/v1/meters/m1/readings", on_page=insert_between_pages, limit=1000)
    stamps = [r["timestamp"] for r in readings]
    assert len(stamps) == len(set(stamps)), "a reading came twice"
    assert stamps == sorted(stamps, key=datetime.fromisoformat)
    assert set(expected) <= set(stamps), "a reading was skipped"
    assert set(stamps) <= set(expected) | set(added)
    assert pages >= 25


def test_a_cursor_of_another_device_or_tampered_is_a_400(client, db):
    add_minutes(db, "vehicle", "v1", DAY, 5)
    add_minutes(db, "vehicle", "v2", DAY, 5)
    cursor = get(client, "/v1/vehicles/v1/readings", limit=2)["next"]
    assert get(client, "/v1/vehicles/v1/readings", limit=2, cursor=cursor)["readings"]
    for path, bad in [("/v1/vehicles/v2/readings", cursor), ("/v1/meters/v1/readings", cursor),
                      ("/v1/vehicles/v1/readings", cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")),
                      ("/v1/vehicles/v1/readings", "x" + cursor), ("/v1/vehicles/v1/readings", "not-a-cursor"),
                      ("/v1/vehicles/v1/readings", "é.é")]:
        body = get(client, path, expect=400, limit=2, cursor=bad)
        assert (body["error"], body["parameter"]) == ("invalid_parameter", "cursor")


@pytest.mark.parametrize(("query", "parameter"), [
    ({"limit": "0"}, "limit"), ({"limit": "10001"}, "limit"), ({"limit": "x"}, "limit"),
    ({"from": "yesterday"}, "from"), ({"to": "2026-01-01T00:00:00"}, "to"), ({"from": "0001-01-01T00:00:00Z"}, "from"),
    ({"interval": "2h"}, "interval"), ({"interval": "1h", "tz": "Mars/Olympus"}, "tz"),
    ({"interval": "1h", "tz": "../../etc/passwd"}, "tz"), ({"format": "xml"}, "format"),
    ({"interval": "1m", "from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "interval"),
    ({"interval": "1h", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
])
def test_bad_parameters_are_400_naming_them(client, query, parameter):
    for path in ("/v1/vehicles/v1/readings", "/v1/meters/m1/readings"):
        body = get(client, path, expect=400, **query)
        assert body["parameter"] == parameter, body


def test_a_bad_device_id_is_400(client):
    assert get(client, "/v1/vehicles/" + "v" * 65 + "/readings", expect=400)["parameter"] == "vehicleId"
    assert get(client, "/v1/meters/a%20b/readings", expect=400)["parameter"] == "meterId"


# -- buckets --------------------------------------------------------------------------------------------------------


def test_hourly_buckets_with_exact_figures_and_empty_gaps(client, db):
    h = timedelta(hours=1)
    add_vehicle(db, "v1", [
        (DAY - timedelta(minutes=10), 40.0, 100.0, 20.0),  # baseline, outside
        (DAY + timedelta(minutes=20), 45.0, 102.0, 22.0),
        (DAY + h, 50.0, 104.5, 26.0),  # on the boundary: the first bucket's (buckets are (start, end])
        (DAY + 2 * h + timedelta(minutes=30), 20.0, 1.0, 30.0),  # reset: a drop the next reading does not undo
        (DAY + 2 * h + timedelta(minutes=40), 25.0, 3.0, 31.0),
    ])
    body = get(client, "/v1/vehicles/v1/readings", interval="1h", **{"from": iso(DAY), "to": iso(DAY + 4 * h)})
    assert (body["vehicleId"], body["interval"], body["tz"]) == ("v1", "1h", "UTC")
    b = body["buckets"]
    assert [x["start"] for x in b] == [iso(DAY + n * h) for n in range(4)]
    assert [x["end"] for x in b] == [iso(DAY + n * h) for n in range(1, 5)]
    assert b[0] == {"start": iso(DAY), "end": iso(DAY + h), "count": 2, "counterResets": 0, "glitches": 0,
                    "implausibleSteps": 0, "dcKwh": 4.5, "socMin": 45.0, "socMax": 50.0, "socLast": 50.0,
                    "batteryTempAvg": 24.0, "batteryTempMax": 26.0}
    assert b[1] == {"start": iso(DAY + h), "end": iso(DAY + 2 * h), "count": 0, "counterResets": 0, "glitches": 0,
                    "implausibleSteps": 0, "dcKwh": 0.0, "socMin": None, "socMax": None, "socLast": None,
                    "batteryTempAvg": None, "batteryTempMax": None}
    assert (b[2]["count"], b[2]["dcKwh"], b[2]["counterResets"], b[2]["socLast"]) == (2, 2.0, 1, 25.0)
    assert b[3]["count"] == 0


def test_meter_buckets_count_glitches_and_voltage(client, db):
    add_meter(db, "m1", [(DAY + timedelta(minutes=5), 100.0, 229.0), (DAY + timedelta(minutes=10), 0.0, 231.0),
                         (DAY + timedelta(minutes=20), 101.0, 233.0)])
    b = get(client, "/v1/meters/m1/readings", interval="15m",
            **{"from": iso(DAY), "to": iso(DAY + timedelta(minutes=30))})["buckets"]
    assert [(x["count"], x["acKwh"], x["glitches"], x["counterResets"]) for x in b] == [(2, 0.0, 1, 0), (1, 1.0, 0, 0)]
    assert (b[0]["voltageAvg"], b[0]["voltageMin"], b[0]["voltageMax"]) == (230.0, 229.0, 231.0)


def test_unaligned_windows_widen_to_whole_buckets(client, db):
    body = get(client, "/v1/meters/m1/readings", interval="5m",
               **{"from": iso(DAY + timedelta(minutes=7)), "to": iso(DAY + timedelta(minutes=11))})
    assert [(x["start"], x["end"]) for x in body["buckets"]] == [
        (iso(DAY + timedelta(minutes=5)), iso(DAY + timedelta(minutes=10))),
        (iso(DAY + timedelta(minutes=10)), iso(DAY + timedelta(minutes=15)))]


def test_a_day_in_berlin_across_the_end_of_summer_time_has_25_hours(client):
    body = get(client, "/v1/vehicles/v1/readings", interval="1d", tz="Europe/Berlin",
               **{"from": "2026-10-24T00:00:00+02:00", "to": "2026-10-27T00:00:00+01:00"})
    spans = [(x["start"], x["end"]) for x in body["buckets"]]
    assert spans == [("2026-10-24T00:00:00+02:00", "2026-10-25T00:00:00+02:00"),
                     ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"),
                     ("2026-10-26T00:00:00+01:00", "2026-10-27T00:00:00+01:00")]
    hours = [(datetime.fromisoformat(e) - datetime.fromisoformat(s)) / timedelta(hours=1) for s, e in spans]
    assert hours == [24, 25, 24]
    spring = get(client, "/v1/vehicles/v1/readings", interval="1d", tz="Europe/Berlin",
                 **{"from": "2026-03-29T00:00:00+01:00", "to": "2026-03-30T00:00:00+02:00"})["buckets"]
    assert [(datetime.fromisoformat(x["end"]) - datetime.fromisoformat(x["start"])) for x in spring] == [
        timedelta(hours=23)]


def test_daily_buckets_in_a_zone_bin_readings_by_local_day(client, db):
    # 23:30 UTC on DAY is 00:30 the next day in Berlin (winter, UTC+1).
    add_meter(db, "m1", [(DAY + timedelta(hours=22), 1.0, 230.0), (DAY + timedelta(hours=23, minutes=30), 2.0, 230.0)])
    b = get(client, "/v1/meters/m1/readings", interval="1d", tz="Europe/Berlin",
            **{"from": iso(DAY - timedelta(hours=1)), "to": iso(DAY + timedelta(hours=23, minutes=1))})["buckets"]
    assert [x["count"] for x in b] == [1, 1]
    assert b[1]["acKwh"] == 1.0


def test_at_most_10000_buckets(client):
    start = DAY - timedelta(minutes=10_000)
    assert len(get(client, "/v1/meters/m1/readings", interval="1m",
                   **{"from": iso(start), "to": iso(DAY)})["buckets"]) == 10_000
    assert get(client, "/v1/meters/m1/readings", expect=400, interval="1m",
               **{"from": iso(start - timedelta(minutes=1)), "to": iso(DAY)})["parameter"] == "interval"


HOURS = 24
PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROFILE
@given(
    minutes=st.lists(st.integers(min_value=-180, max_value=HOURS * 60 + 120), min_size=1, max_size=60, unique=True),
    steps_wh=st.lists(st.integers(min_value=-300_000, max_value=20_000), min_size=60, max_size=60),
    glitches=st.lists(st.integers(min_value=0, max_value=59), max_size=4),
)
def test_24_hourly_buckets_add_up_to_the_24h_analytics(client, db, minutes, steps_wh, glitches):
    """Random counters with resets (negative steps), glitches (single low readings) and late readings."""
    meter_id, vehicle_id = f"m-{uuid.uuid4().hex[:10]}", f"v-{uuid.uuid4().hex[:10]}"
    to = DAY + timedelta(hours=HOURS)
    times = sorted(DAY + timedelta(minutes=m) for m in minutes)
    values, total = [], 500_000
    for step in steps_wh[: len(times)]:
        total = max(0, total + step)
        values.append(total)
    for g in glitches:
        if g < len(values):
            values[g] = values[g] // 3
    points = [(ts, wh / 1000, 230.0) for ts, wh in zip(times, values, strict=True)]
    # Late delivery: the second half lands first.
    add_meter(db, meter_id, points[len(points) // 2:])
    add_meter(db, meter_id, points[: len(points) // 2])
    client.post("/v1/mappings", json={"vehicleId": vehicle_id, "meterId": meter_id})
    analytics = get(client, f"/v1/analytics/performance/{vehicle_id}", hours=HOURS, to=iso(to))
    b = get(client, f"/v1/meters/{meter_id}/readings", interval="1h", **{"from": iso(DAY), "to": iso(to)})["buckets"]
    assert len(b) == HOURS
    assert round(sum(x["acKwh"] for x in b), 3) == analytics["acKwh"]
    assert sum(x["count"] for x in b) == analytics["readings"]["meter"]
    assert sum(x["counterResets"] for x in b) == analytics["counterResets"]["meter"]
    assert sum(x["glitches"] for x in b) == analytics["glitches"]["meter"]
    assert sum(x["implausibleSteps"] for x in b) == analytics["implausibleSteps"]["meter"]


# -- CSV ------------------------------------------------------------------------------------------------------------


def _parse_csv(text: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        for name, value in row.items():
            if name not in ("vehicleId", "meterId", "timestamp", "start", "end"):
                row[name] = None if value == "" else float(value)
    return rows


def test_csv_parses_back_to_the_json_readings(client, db):
    add_minutes(db, "vehicle", "v1", DAY, 2_500)
    window = {"from": iso(DAY - timedelta(minutes=1)), "to": iso(DAY + timedelta(days=2))}
    r = client.get("/v1/vehicles/v1/readings", query_string=window, headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.is_streamed
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename=\"vehicle-v1-") and disposition.endswith('.csv"')
    text = r.get_data(as_text=True)
    assert text.splitlines()[0] == "vehicleId,timestamp,soc,kwhDeliveredDc,batteryTemp"
    readings, _ = all_pages(client, "/v1/vehicles/v1/readings", limit=1000, **window)
    assert len(readings) == 2_500
    assert _parse_csv(text) == readings
    assert client.get("/v1/vehicles/v1/readings", query_string={**window, "format": "csv"}).data == r.data


def test_csv_writes_timestamps_and_numbers_as_the_json_readings_do(client, db):
    """Postgres writes the CSV (COPY): fractional seconds, whole seconds, large and tiny values round-trip."""
    points = [(DAY + timedelta(seconds=1, microseconds=250_000), 0.1 + 0.2), (DAY + timedelta(seconds=2), 1e12),
              (DAY + timedelta(seconds=3, microseconds=1), 1e-7)]
    add_meter(db, "m1", [(ts, kwh, 230.5) for ts, kwh in points])
    window = {"from": iso(DAY), "to": iso(DAY + timedelta(minutes=1))}
    rows = _parse_csv(get(client, "/v1/meters/m1/readings", **window, format="csv").get_data(as_text=True))
    readings = get(client, "/v1/meters/m1/readings", **window)["readings"]
    assert [r["timestamp"] for r in rows] == [iso(ts) for ts, _ in points]
    assert rows == readings
    assert [r["kwhConsumedAc"] for r in rows] == [value for _, value in points]


def test_json_stays_the_default_for_browsers_and_wildcards(client, db):
    add_minutes(db, "meter", "m1", DAY, 3)
    for accept in ("*/*", "text/html,application/xhtml+xml,*/*;q=0.8", "application/json, text/csv;q=0.5"):
        r = client.get("/v1/meters/m1/readings", headers={"Accept": accept})
        assert r.mimetype == "application/json", accept
    r = client.get("/v1/meters/m1/readings", headers={"Accept": "text/csv"})
    assert r.mimetype == "text/csv"


def test_bucket_csv_has_the_bucket_fields(client, db):
    add_minutes(db, "meter", "m1", DAY, 120)
    query = {"interval": "1h", "from": iso(DAY), "to": iso(DAY + timedelta(hours=3)), "format": "csv"}
    r = client.get("/v1/meters/m1/readings", query_string=query)
    rows = _parse_csv(r.get_data(as_text=True))
    json_buckets = get(client, "/v1/meters/m1/readings", **{**query, "format": "json"})["buckets"]
    assert rows == [{k: (float(v) if isinstance(v, int | float) else v) for k, v in b.items()} for b in json_buckets]
    assert [row["count"] for row in rows] == [60.0, 59.0, 0.0]  # the reading at `from` is outside
    assert list(itertools.chain(rows[0]))[:3] == ["start", "end", "count"]


def test_csv_with_postgres_unreachable_is_a_503_json_before_any_row(client, app, db, monkeypatch):
    from psycopg_pool import PoolTimeout

    from web import db as web_db

    def unavailable(app=None):
        raise PoolTimeout("no connection")

    add_minutes(db, "meter", "m1", DAY, 3)
    monkeypatch.setattr(web_db, "connection", unavailable)
    r = client.get("/v1/meters/m1/readings", query_string={"format": "csv"})
    assert r.status_code == 503
    assert r.mimetype == "application/json"


def test_an_empty_csv_is_its_header(client):
    r = client.get("/v1/meters/nobody/readings", query_string={"format": "csv"})
    assert (r.status_code, r.get_data(as_text=True)) == (200, "meterId,timestamp,kwhConsumedAc,voltage\n")

"""Conflicting duplicates: recorded once by the drain (also through a crash and redelivery); GET /v1/conflicts."""

from datetime import UTC, datetime, timedelta

from common import metrics
from common.streams import CONSUMER_GROUP, STREAM_KEY
from tests.conftest import iso, meter, vehicle
from tests.processes import wait_for
from workers.drain import StreamDrainer

TS = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def drain_all(settings, redis_client, name="conflicts-test"):
    drainer = StreamDrainer(settings, redis_client, name)
    drainer.ensure_group()
    try:
        wait_for(lambda: drainer.drain_once(block_ms=10) == 0
                 and not redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"], 30, interval=0,
                 message="the stream to drain")
    finally:
        drainer.close()


def send(client, readings):
    assert client.post("/v1/telemetry", json=readings).status_code == 202


def conflicts(db):
    return db.execute("SELECT kind, device_id, ts, stored, rejected FROM reading_conflicts ORDER BY id").fetchall()


def counted(redis_client) -> int:
    return metrics.read_counters(redis_client)["reading_conflicts"].get((), 0)


def test_a_duplicate_with_other_values_is_recorded_and_history_keeps_the_first(client, db, settings, redis_client):
    send(client, [meter("m1", kwh=10.0, voltage=230.0, ts=TS), vehicle("v1", soc=50.0, kwh=5.0, temp=20.0, ts=TS)])
    drain_all(settings, redis_client)
    # The same values again is a plain duplicate; other values are conflicts.
    send(client, [meter("m1", kwh=10.0, voltage=230.0, ts=TS)])
    drain_all(settings, redis_client)
    assert conflicts(db) == []
    send(client, [meter("m1", kwh=99.0, voltage=230.0, ts=TS), vehicle("v1", soc=51.0, kwh=5.0, temp=20.0, ts=TS)])
    drain_all(settings, redis_client)
    assert conflicts(db) == [
        ("meter", "m1", TS, {"kwhConsumedAc": 10.0, "voltage": 230.0}, {"kwhConsumedAc": 99.0, "voltage": 230.0}),
        ("vehicle", "v1", TS, {"soc": 50.0, "kwhDeliveredDc": 5.0, "batteryTemp": 20.0},
         {"soc": 51.0, "kwhDeliveredDc": 5.0, "batteryTemp": 20.0}),
    ]
    assert db.execute("SELECT kwh_consumed_ac FROM meter_readings WHERE meter_id = 'm1'").fetchall() == [(10.0,)]
    assert counted(redis_client) == 2
    assert "energy_reading_conflicts_total 2" in client.get("/metrics").get_data(as_text=True)


def test_two_values_in_one_batch_keep_one_and_record_the_other(client, db, settings, redis_client):
    send(client, [meter("m1", kwh=1.0, ts=TS), meter("m1", kwh=2.0, ts=TS), meter("m1", kwh=2.0, ts=TS)])
    drain_all(settings, redis_client)
    (kept,), = db.execute("SELECT kwh_consumed_ac FROM meter_readings WHERE meter_id = 'm1'").fetchall()
    rows = conflicts(db)
    assert len(rows) == 1
    assert rows[0][3]["kwhConsumedAc"] == kept
    assert rows[0][4]["kwhConsumedAc"] == 3.0 - kept


def test_a_conflict_is_recorded_once_through_a_crash_after_commit_and_a_redelivery(client, db, settings, redis_client):
    send(client, [meter("m1", kwh=10.0, ts=TS)])
    drain_all(settings, redis_client)
    send(client, [meter("m1", kwh=11.0, ts=TS), meter("m2", kwh=1.0, ts=TS)])
    # Worker A commits the batch, then dies before XACK: the entry stays pending under A.
    crashed = StreamDrainer(settings, redis_client, "crashing-worker")
    entries, _ = crashed.fetch(block_ms=100)
    assert len(crashed.write(entries)) == len(entries) == 1  # one stream entry per request
    crashed.close()
    assert len(conflicts(db)) == 1
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 1
    # Worker B claims the idle entries and writes them again.
    redeliverer = StreamDrainer(settings, redis_client, "redelivering-worker")
    try:
        wait_for(lambda: redeliverer.drain_once(block_ms=10) > 0, 30, interval=0.1, message="the redelivery")
        assert redeliverer.totals.reclaimed == 1
    finally:
        redeliverer.close()
    assert not redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"]
    assert len(conflicts(db)) == 1
    assert counted(redis_client) == 1


def test_a_second_different_value_is_a_second_conflict(client, db, settings, redis_client):
    for kwh in (1.0, 2.0, 3.0, 2.0):
        send(client, [meter("m1", kwh=kwh, ts=TS)])
        drain_all(settings, redis_client)
    assert [row[4]["kwhConsumedAc"] for row in conflicts(db)] == [2.0, 3.0]


def _record(db, kind, device_id, ts, n):
    db.execute("INSERT INTO reading_conflicts (kind, device_id, ts, stored, rejected) VALUES (%s, %s, %s, %s, %s)",
               (kind, device_id, ts, '{"voltage": 1}', f'{{"voltage": {n}}}'))


def test_the_listing_pages_filters_and_rejects_bad_cursors(client, db):
    for n in range(25):
        _record(db, "meter" if n % 2 else "vehicle", f"d{n % 3}", TS + timedelta(minutes=n % 10), n)
    seen, cursor = [], None
    while True:
        r = client.get("/v1/conflicts", query_string={"limit": 4, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        body = r.get_json()
        seen += body["conflicts"]
        cursor = body["next"]
        if not cursor:
            break
    assert len(seen) == 25
    assert len({(c["deviceId"], c["timestamp"], c["rejected"]["voltage"]) for c in seen}) == 25
    assert [c["timestamp"] for c in seen] == sorted((c["timestamp"] for c in seen), key=datetime.fromisoformat)
    assert set(seen[0]) == {"kind", "deviceId", "timestamp", "stored", "rejected", "recordedAt"}
    window = {"deviceId": "d1", "from": iso(TS), "to": iso(TS + timedelta(minutes=5))}
    body = client.get("/v1/conflicts", query_string=window).get_json()
    assert body["conflicts"] and {c["deviceId"] for c in body["conflicts"]} == {"d1"}
    assert all(TS < datetime.fromisoformat(c["timestamp"]) <= TS + timedelta(minutes=5) for c in body["conflicts"])
    first = client.get("/v1/conflicts", query_string={"limit": 2}).get_json()["next"]
    for query in ({"cursor": first, "deviceId": "d1"}, {"cursor": first[:-3] + "xyz"}, {"limit": 0},
                  {"deviceId": "bad id"}, {"from": "soon"}):
        r = client.get("/v1/conflicts", query_string=query)
        assert r.status_code == 400, query
        assert r.get_json()["error"] == "invalid_parameter"

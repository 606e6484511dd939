"""The HTTP API of a real Gateway running in-process (its own asyncio loop in a thread), spoken to
over TCP with httpx. The uplink points at a port where nothing listens: the API must not need it."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.events import DEVICE_ID_PATTERN, EVENT_TYPE_PATTERN
from simulator.brokers import free_port
from simulator.process import RunningGateway
from support import outbox_rows

TOKEN = "test-token-0123456789abcdef"
MAX_BODY = 100_000
DEVICE = "parking-b2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def site_config(db_path, uplink_port: int):
    return parse_config(yaml.safe_dump({
        "site_id": "mall-1",
        "gateway_id": "gw-1",
        "uplink": {"host": "127.0.0.1", "port": uplink_port, "reconnect_min": "100ms", "reconnect_max": "1s"},
        "storage": {"path": str(db_path)},
        "api": {"host": "127.0.0.1", "port": 0, "token": TOKEN, "max_body_bytes": MAX_BODY},
        "devices": [{"id": DEVICE, "kind": "http_ingest", "stale_after": "1h"}],
    }), "test-site.yaml", env={})


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("gateway") / "gateway.db"
    gw = RunningGateway(site_config(db_path, free_port())).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(running):
    with httpx.Client(base_url=f"http://127.0.0.1:{running.gateway.api_port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def db(running):
    return running.gateway.config.storage.path


def stored(db_path, where: str = "type != 'device.status'", params: tuple = ()) -> list[dict]:
    """Outbox rows, read on a separate connection (device status events left out by default)."""
    return outbox_rows(db_path, where, params)


def event(**fields) -> dict:
    return {"type": "parking.entry", "device_id": DEVICE, "data": {"plate": "沪A12345"}, **fields}


def post(client: httpx.Client, body, headers=AUTH) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return client.post("/v1/ingest", content=body, headers={**headers, "Content-Type": "application/json"})
    return client.post("/v1/ingest", json=body, headers=headers)


# ---------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token-0123456789"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
], ids=["none", "wrong", "longer", "basic", "no-scheme"])
def test_401_without_the_right_token(client, db, headers):
    before = len(stored(db))
    response = post(client, {"events": [event()]}, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert len(stored(db)) == before


def test_401_wins_over_a_malformed_body(client):
    response = post(client, b"{this is not json", {"Authorization": "Bearer wrong-token-0123456789"})
    assert response.status_code == 401


def test_401_wins_over_a_too_large_body(client):
    response = post(client, b"x" * (MAX_BODY + 1), {})
    assert response.status_code == 401


# -------------------------------------------------------------------------------- ingest


def test_202_with_per_event_results(client, db):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    response = post(client, {"events": [event(event_id=i, data={"n": n}) for n, i in enumerate(ids)]})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (3, 0)
    assert [r["event_id"] for r in body["events"]] == ids
    assert [r["duplicate"] for r in body["events"]] == [False] * 3
    result_seqs = [r["seq"] for r in body["events"]]
    assert result_seqs == sorted(result_seqs) and len(set(result_seqs)) == 3
    rows = {r["event_id"]: r for r in stored(db)}
    for n, (event_id, seq) in enumerate(zip(ids, result_seqs)):
        envelope = json.loads(rows[event_id]["body"])
        assert (envelope["seq"], envelope["data"], envelope["device_id"]) == (seq, {"n": n}, DEVICE)
        assert (envelope["site_id"], envelope["gateway_id"], envelope["type"]) == ("mall-1", "gw-1", "parking.entry")


def test_event_without_id_or_ts_gets_them(client, db):
    response = post(client, {"events": [event()]})
    assert response.status_code == 202
    [result] = response.json()["events"]
    assert uuid.UUID(result["event_id"]).version == 7
    [row] = stored(db, "event_id = ?", (result["event_id"],))
    ts = json.loads(row["body"])["ts"]
    assert ts.endswith("Z") and datetime.fromisoformat(ts.replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def test_repeated_event_id_is_a_duplicate_with_the_same_seq(client, db):
    event_id = str(uuid.uuid4())
    first = post(client, {"events": [event(event_id=event_id)]})
    again = post(client, {"events": [event(event_id=event_id, data={"other": True})]})
    assert first.status_code == again.status_code == 202
    [a], [b] = first.json()["events"], again.json()["events"]
    assert (b["duplicate"], b["seq"]) == (True, a["seq"])
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 1)
    [row] = stored(db, "event_id = ?", (event_id,))
    assert json.loads(row["body"])["data"] == {"plate": "沪A12345"}  # the first one stays


def test_same_event_id_twice_in_one_body(client, db):
    event_id = str(uuid.uuid4())
    response = post(client, {"events": [event(event_id=event_id), event(event_id=event_id)]})
    assert response.status_code == 202
    a, b = response.json()["events"]
    assert (a["duplicate"], b["duplicate"], b["seq"]) == (False, True, a["seq"])
    assert len(stored(db, "event_id = ?", (event_id,))) == 1


def test_event_id_is_normalised_before_dedupe(client, db):
    event_id = uuid.uuid4()
    first = post(client, {"events": [event(event_id=str(event_id).upper())]})
    again = post(client, {"events": [event(event_id=event_id.hex)]})
    assert first.json()["events"][0]["event_id"] == str(event_id)
    assert again.json()["events"][0]["duplicate"] is True
    assert len(stored(db, "event_id = ?", (str(event_id),))) == 1


def test_ts_with_offset_is_normalised_to_utc(client, db):
    event_id = str(uuid.uuid4())
    response = post(client, {"events": [event(event_id=event_id, ts="2026-03-01T08:30:00.250+08:00")]})
    assert response.status_code == 202
    [row] = stored(db, "event_id = ?", (event_id,))
    assert json.loads(row["body"])["ts"] == "2026-03-01T00:30:00.250Z"


MALFORMED = {
    "not json": b"{not json",
    "empty body": b"",
    "json array": b"[]",
    "no events": {},
    "events empty": {"events": []},
    "events not a list": {"events": {"type": "a.b"}},
    "1001 events": {"events": [event() for _ in range(1001)]},
    "bad type pattern": {"events": [event(type="Parking.Entry")]},
    "reserved stream ack": {"events": [event(type="ack.received")]},
    "integer beyond 64 bits": {"events": [event(data={"n": 2 ** 70})]},
    "type without dot": {"events": [event(type="parking")]},
    "type too long": {"events": [event(type="a." + "b" * 63)]},
    "bad device_id": {"events": [event(device_id="-starts-with-dash")]},
    "device_id with space": {"events": [event(device_id="car park")]},
    "missing device_id": {"events": [{"type": "parking.entry", "data": {}}]},
    "bad UUID": {"events": [event(event_id="not-a-uuid")]},
    "ts without zone": {"events": [event(ts="2026-03-01T08:30:00")]},
    "ts not a time": {"events": [event(ts="yesterday")]},
    "ts out of range in UTC": {"events": [event(ts="0001-01-01T00:00:00+08:00")]},
    "extra field": {"events": [event(colour="red")]},
    "extra top-level field": {"events": [event()], "batch": 1},
    "data not an object": {"events": [event(data=[1, 2])]},
    "data missing": {"events": [{"type": "parking.entry", "device_id": DEVICE}]},
    "data with NaN": b'{"events":[{"type":"a.b","device_id":"d","data":{"x":NaN}}]}',
    "data with 1e400": b'{"events":[{"type":"a.b","device_id":"d","data":{"x":1e400}}]}',
    "lone surrogate": b'{"events":[{"type":"a.b","device_id":"d","data":{"x":"\\ud800"}}]}',
    "nested too deep": b'{"events":[{"type":"a.b","device_id":"d","data":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}]}",
    "one bad among good": {"events": [event(), event(), event(type="BAD")]},
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_body_is_422_and_nothing_stored(client, db, body):
    before = len(stored(db))
    response = post(client, body)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert len(stored(db)) == before


def test_422_says_where(client):
    response = post(client, {"events": [event(), event(device_id="-bad")]})
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["events", 1, "device_id"]
    assert "input" not in problem  # the body is not echoed back


def test_1000_events_is_the_limit(client, db):
    before = len(stored(db))
    response = post(client, {"events": [event(data={"i": i}) for i in range(1000)]})
    assert response.status_code == 202
    assert response.json()["accepted"] == 1000
    assert len(stored(db)) == before + 1000


def test_body_over_max_body_bytes_is_413(client, db):
    before = len(stored(db))
    big = {"events": [event(data={"pad": "x" * MAX_BODY})]}
    response = post(client, big)
    assert response.status_code == 413
    assert len(stored(db)) == before


def test_streamed_body_over_max_body_bytes_is_413(client, db):
    """Without a Content-Length (chunked), the limit is enforced while reading."""
    before = len(stored(db))

    def chunks():
        yield b'{"events":[{"type":"a.b","device_id":"d","data":{"pad":"'
        for _ in range(MAX_BODY // 1000 + 1):
            yield b"x" * 1000
        yield b'"}}]}'

    response = client.post("/v1/ingest", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert len(stored(db)) == before


def test_streamed_body_under_the_limit_is_accepted(client):
    def chunks():
        yield b'{"events":[{"type":"a.b",'
        yield b'"device_id":"d","data":{}}]}'

    response = client.post("/v1/ingest", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 202


# -------------------------------------------------------------------------------- health


def test_health(client, running):
    post(client, {"events": [event()]})  # the device has posted: touched
    response = client.get("/v1/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "degraded"  # the uplink has no broker to talk to
    assert report["uplink"]["connected"] is False
    assert (report["site_id"], report["gateway_id"]) == ("mall-1", "gw-1")
    assert isinstance(report["uptime_s"], (int, float)) and report["uptime_s"] >= 0
    stats = running.gateway.outbox.stats()
    assert report["backlog"]["events"] >= 1 and report["backlog"]["bytes"] > 0
    assert report["backlog"]["events"] <= stats.backlog_events
    [device] = report["devices"]
    assert (device["device_id"], device["kind"]) == (DEVICE, "http_ingest")
    assert device["state"] in {"starting", "online", "offline"}
    assert "last_activity" not in device


def test_health_needs_no_token(client):
    assert client.get("/v1/health").status_code == 200


def test_device_goes_online_after_posting(client, running):
    post(client, {"events": [event()]})
    deadline = time.monotonic() + 10
    while running.gateway.health.get(DEVICE).state.value != "online":
        assert time.monotonic() < deadline, "the device did not go online"
        time.sleep(0.05)
    [device] = client.get("/v1/health").json()["devices"]
    assert device["state"] == "online"


# ------------------------------------------------------------------------------- OpenAPI


def test_docs_are_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower() and "/openapi.json" in response.text


def test_openapi_has_ingest_with_its_schema(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    post_op = spec["paths"]["/v1/ingest"]["post"]
    assert post_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IngestRequest"}
    assert {"202", "401", "413", "422"} <= set(post_op["responses"])
    schemas = spec["components"]["schemas"]
    events = schemas["IngestRequest"]["properties"]["events"]
    assert events["maxItems"] == 1000 and events["minItems"] == 1
    ref = events["items"]["$ref"]
    assert ref.startswith("#/components/schemas/")
    assert set(schemas[ref.rsplit("/", 1)[1]]["required"]) == {"type", "device_id", "data"}
    assert "/v1/health" in spec["paths"]
    assert client.get("/openapi.json").json() == spec  # built once, the same every time


# ----------------------------------------------------------------------- property: no 500s

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
event_types = (st.from_regex(EVENT_TYPE_PATTERN, fullmatch=True) | st.text(max_size=12)).filter(
    lambda t: t != "device.status")
device_ids = st.from_regex(DEVICE_ID_PATTERN, fullmatch=True) | st.text(max_size=12)
event_ids = st.uuids().map(str) | st.sampled_from([str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]) | st.text(max_size=8)
timestamps = st.datetimes(timezones=st.timezones()).map(datetime.isoformat) | st.datetimes().map(
    datetime.isoformat) | st.text(max_size=30)
events = st.fixed_dictionaries(
    {"type": event_types, "device_id": device_ids, "data": st.dictionaries(st.text(max_size=8), json_values,
                                                                           max_size=4) | json_values},
    optional={"event_id": event_ids, "ts": timestamps, "extra": json_values},
)
bodies = st.one_of(
    st.fixed_dictionaries({"events": st.lists(events, max_size=4)}),
    st.fixed_dictionaries({"events": st.lists(events, max_size=2)}, optional={"more": json_values}),
    json_values,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_arbitrary_bodies_give_202_or_422_and_store_only_what_was_accepted(client, db, body):
    before = len(stored(db))
    response = post(client, json.dumps(body).encode())
    assert response.status_code in (202, 422), response.text
    after = len(stored(db))
    if response.status_code == 202:
        result = response.json()
        assert after == before + result["accepted"]
        assert result["accepted"] + result["duplicates"] == len(body["events"])
    else:
        assert after == before


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes_never_give_500(client, db, body):
    before = len(stored(db))
    response = post(client, body)
    assert response.status_code in (202, 422), response.text
    if response.status_code == 422:
        assert len(stored(db)) == before


# --------------------------------------------------------------------------- with a broker


def test_gateway_with_a_broker_is_ok_and_delivers(mosquitto, tmp_path):
    gw = RunningGateway(site_config(tmp_path / "gateway.db", mosquitto.port)).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.gateway.api_port}", timeout=30) as client:
            assert post(client, {"events": [event()]}).status_code == 202
            deadline = time.monotonic() + 20
            while True:
                report = client.get("/v1/health").json()
                if report["status"] == "ok" and report["backlog"]["events"] == 0:
                    break
                assert time.monotonic() < deadline, report
                time.sleep(0.05)
            assert report["uplink"]["connected"] is True
            assert report["uplink"]["events_acknowledged"] >= 1
    finally:
        gw.stop()

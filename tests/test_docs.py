"""Keep docs/ true to the code: schemas are valid and match what the code really produces (camera
events included, from the real analytics pipeline), the AsyncAPI document's references resolve, every
config key is documented with its default, and the commands the docs show are ones the CLI accepts.

Needs the `jsonschema` package (>= 4.18, with `referencing`), a test extra.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import shlex
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urldefrag

import numpy as np
import pytest
import yaml
from pydantic import ByteSize, TypeAdapter, ValidationError

try:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
except ImportError:  # pragma: no cover
    pytest.fail("tests/test_docs.py needs jsonschema>=4.18 (a test extra): pip install jsonschema", pytrace=False)

from drivers import registry as driver_registry  # noqa: E402
from drivers.base import DeviceConfig  # noqa: E402
from gateway.access.rules import Reason  # noqa: E402
from gateway.access.service import AccessService  # noqa: E402
from gateway.access.store import AccessStore, SyncError, parse_sync  # noqa: E402
from gateway.access.wiegand import encode_h10301  # noqa: E402
from gateway.bus import EventBus  # noqa: E402
from gateway.commands import MAX_COMMAND_ID_LENGTH, MAX_PAYLOAD_BYTES, CommandError, CommandRouter, parse_command  # noqa: E402
from gateway.config import DoorConfig  # noqa: E402
from gateway.config import UplinkConfig, parse_config, site_model  # noqa: E402
from gateway.events import DEVICE_ID_PATTERN, EVENT_TYPE_PATTERN, Event, envelope_json, utc_timestamp  # noqa: E402
from gateway.health import DeviceHealth, DeviceState  # noqa: E402
from gateway.outbox import ALARM_EVENT_TYPE, Outbox  # noqa: E402
from gateway.uplink import Topics, Uplink, batch_messages  # noqa: E402
from gateway.validation import parse_duration  # noqa: E402
from gateway.vision.detect import Detections  # noqa: E402
from gateway.vision.pipeline import CameraAnalytics  # noqa: E402
from gateway.vision.settings import AnalyticsSettings, LineSettings, ZoneSettings  # noqa: E402
from support import ALL_WEEK, FakeReaderDriver  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCHEMAS = DOCS / "schemas"
SITE, GATEWAY = "mall-sh-001", "gw-main"
# Event types the gateway itself produces, each with a schema in docs/schemas/events/.
GATEWAY_EVENT_TYPES = ("device.status", ALARM_EVENT_TYPE, "gateway.warning", "visit.entry", "visit.exit", "zone.dwell", "visit.counts",
                       "access.granted", "access.denied", "sale.captured", "sale.unparsed", "points.awarded",
                       "points.reversed", "ad.played")


# ------------------------------------------------------------------------------------- helpers


def _retrieve(uri: str) -> Resource:
    path = Path(uri.removeprefix("file://"))
    return Resource.from_contents(json.loads(path.read_text(encoding="utf-8")))


REGISTRY = Registry(retrieve=_retrieve)


def validator(schema_file: str | Path) -> Draft202012Validator:
    """A validator for one schema file, resolving its relative $refs against the file's location."""
    path = SCHEMAS / schema_file if not Path(schema_file).is_absolute() else Path(schema_file)
    return Draft202012Validator({"$ref": path.resolve().as_uri()}, registry=REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(schema_file: str | Path, instance: Any) -> None:
    errors = sorted(validator(schema_file).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{schema_file}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors)


def assert_invalid(schema_file: str | Path, instance: Any) -> None:
    assert not validator(schema_file).is_valid(instance), f"{schema_file} should reject {instance!r}"


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.rglob("*.json"))


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from walk_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_refs(item)


def resolve_pointer(document: Any, pointer: str) -> Any:
    node = document
    for part in pointer.lstrip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.fixture(scope="module")
def asyncapi() -> dict:
    return yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))


def make_outbox(tmp_path: Path, **kwargs) -> Outbox:
    return Outbox(tmp_path / "gateway.db", site_id=SITE, gateway_id=GATEWAY, **kwargs).open()


def stored_bodies(db_path: Path, where: str = "1", params: tuple = ()) -> list[dict]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(f"SELECT body FROM outbox WHERE {where} ORDER BY seq", params).fetchall()
    return [json.loads(body) for (body,) in rows]


# ----------------------------------------------------------------------------- schema files


def test_docs_files_exist():
    for name in ("architecture.md", "config.md", "mqtt.md", "vision.md", "access.md", "benchmarks.md", "asyncapi.yaml",
                 "schemas/commands/access.sync.schema.json", "schemas/commands/access.sync.command.schema.json",
                 "schemas/commands/access.sync.ack.schema.json", "schemas/commands/ads.sync.schema.json",
                 "deploy/gateway.service", "schemas/envelope.schema.json", "schemas/batch.schema.json",
                 "schemas/ack.schema.json", "schemas/status.schema.json", "schemas/command.schema.json",
                 *(f"schemas/events/{t}.schema.json" for t in GATEWAY_EVENT_TYPES)):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_schema_is_valid_draft_2020_12(path: Path):
    schema = load_json(path)
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for ref in walk_refs(schema):
        target, fragment = urldefrag(ref)
        if target:
            assert (path.parent / target).is_file(), f"{path.name}: $ref {ref} does not resolve"
    for example in schema.get("examples", []):
        assert_valid(path, example)


def test_envelope_schema_matches_the_code():
    props = load_json(SCHEMAS / "envelope.schema.json")["properties"]
    config_props = site_model().model_json_schema()["properties"]
    assert props["type"]["pattern"] == EVENT_TYPE_PATTERN.pattern
    assert props["site_id"]["pattern"] == config_props["site_id"]["pattern"]
    assert props["gateway_id"]["pattern"] == config_props["gateway_id"]["pattern"]
    assert props["device_id"]["pattern"] == DEVICE_ID_PATTERN.pattern
    sample = json.loads(envelope_json(Event("parking.entry", "parking-b2", {}), site_id=SITE, gateway_id=GATEWAY,
                                      seq=1))
    assert set(props) == set(sample)


def test_event_schemas_exist_for_the_types_the_gateway_produces():
    for event_type in GATEWAY_EVENT_TYPES:
        schema = load_json(SCHEMAS / "events" / f"{event_type}.schema.json")
        assert schema["properties"]["type"]["const"] == event_type
    assert {p.name.removesuffix(".schema.json") for p in (SCHEMAS / "events").glob("*.json")} == set(GATEWAY_EVENT_TYPES)


def event_schema_file(event_type: str) -> Path | None:
    """The schema of an event type the gateway produces (None for other types, e.g. ingested ones)."""
    path = SCHEMAS / "events" / f"{event_type}.schema.json"
    return path if path.is_file() else None


# ------------------------------------------------------------------------------ real events


def test_real_envelopes_validate():
    for data in ({}, {"plate": "沪A12345", "nested": {"a": [1, 2.5, None]}}):
        body = envelope_json(Event("parking.entry", "parking-b2", data), site_id=SITE, gateway_id=GATEWAY, seq=7)
        assert_valid("envelope.schema.json", json.loads(body))
    assert_invalid("envelope.schema.json", {"event_id": "x"})


def test_device_status_events_validate():
    schema = load_json(SCHEMAS / "events" / "device.status.schema.json")
    assert schema["properties"]["data"]["properties"]["state"]["enum"] == [s.value for s in DeviceState]
    for health in (
        DeviceHealth("parking-b2", "http_ingest"),
        DeviceHealth("parking-b2", "http_ingest", state=DeviceState.OFFLINE, last_error="nothing posted yet"),
        DeviceHealth("door-1", "http_ingest", state=DeviceState.ERROR, last_error="OSError: no such device",
                     restarts=3, last_activity=12.5),
    ):
        data = health.as_dict()
        body = envelope_json(Event("device.status", health.device_id, data), site_id=SITE, gateway_id=GATEWAY, seq=3)
        assert_valid("events/device.status.schema.json", json.loads(body))
        assert set(schema["properties"]["data"]["required"]) == set(data)
    wrong = json.loads(envelope_json(Event("device.status", "d1", {"state": "online"}), site_id=SITE,
                                     gateway_id=GATEWAY, seq=1))
    assert_invalid("events/device.status.schema.json", wrong)


def test_gateway_alarms_from_a_real_outbox_validate(tmp_path: Path):
    outbox = make_outbox(tmp_path, max_bytes=100, max_age=3600, prune_interval=0)
    try:
        # Over the byte cap with nothing but critical events: storage_full.
        outbox.accept([Event("access.granted", "door-1", {"card": f"{i:08d}"}) for i in range(3)])
        outbox.accept([Event("visit.counts", "cam-1", {"in": 1}), Event("parking.entry", "p1", {"plate": "A"})])
        # Critical events older than max_age: critical_events_over_max_age.
        outbox.run_in_writer(lambda conn: conn.execute("UPDATE outbox SET created = 0")).result(10)
        outbox.accept([Event("access.granted", "door-1", {"card": "x"})])
        counters = outbox.stats().counters
    finally:
        outbox.close()
    alarms = stored_bodies(tmp_path / "gateway.db", "type = ?", (ALARM_EVENT_TYPE,))
    assert {a["data"]["alarm"] for a in alarms} == {"storage_full", "critical_events_over_max_age"}
    for alarm in alarms:
        assert_valid("events/gateway.alarm.schema.json", alarm)
        assert alarm["device_id"] == GATEWAY
    for alarm in stored_bodies(tmp_path / "gateway.db"):
        assert_valid("envelope.schema.json", alarm)

    # Every counter the outbox keeps is explained in the architecture page.
    architecture = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert {"dropped_low", "dropped_normal"} <= set(counters)
    for name in counters:
        assert f"`{name}`" in architecture, f"outbox counter {name} is not documented in docs/architecture.md"


def test_real_batches_validate(tmp_path: Path, asyncapi: dict):
    outbox = make_outbox(tmp_path)
    try:
        events = [Event("parking.entry", "parking-b2", {"plate": f"沪A{i:05d}"}) for i in range(30)]
        events += [Event("access.granted", "door-1", {"card": str(i)}) for i in range(5)]
        events.append(Event("device.status", "door-1", DeviceHealth("door-1", "http_ingest").as_dict()))
        outbox.accept(events)
        rows = outbox.pending_after(0, 1000)
    finally:
        outbox.close()
    topics = Topics("site", SITE, GATEWAY)
    messages = batch_messages(rows, topics, max_events=8, max_bytes=2048)
    assert len(messages) > 3
    address = asyncapi["channels"]["eventBatches"]["address"]
    for message in messages:
        payload = json.loads(message.payload)
        assert_valid("batch.schema.json", payload)
        stream = payload["events"][0]["type"].split(".")[0]
        assert message.topic == address.format(prefix="site", site_id=SITE, gateway_id=GATEWAY, stream=stream)
        assert all(e["type"].split(".")[0] == stream for e in payload["events"])
        seqs = [e["seq"] for e in payload["events"]]
        assert seqs == sorted(seqs)


# ---------------------------------------------------------------------------- camera events
#
# Real camera events: the real analytics pipeline (motion gate, tracker, lines, zones, interval
# figures) fed synthetic frames in which one bright "person" walks in across a line, through a zone
# and out across another line. Only the detector is a stand-in: it reports the bright box it sees.

CAMERA = "cam-entrance-1"
FRAME_W, FRAME_H = 320, 240


class BrightBoxDetector:
    """Any object with detect(image) -> Detections will do; this one finds the bright pixels."""

    def detect(self, image: np.ndarray) -> Detections:
        ys, xs = np.nonzero(image[:, :, 0] > 128)
        if len(xs) == 0:
            return Detections.empty()
        return Detections(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32),
                          np.array([0.9], np.float32), np.zeros(1, np.int32))


def walking_person_frames(blank_after: int = 12) -> list[np.ndarray]:
    """A 30x60 box whose foot goes up from the bottom edge across y=170 (door-in), through the
    zone, then right across x=250 (side-exit); then empty frames."""
    path = [(150, y) for y in range(236, 116, -4)] + [(x, 116) for x in range(154, 300, 4)]
    frames = []
    for foot_x, foot_y in path:
        image = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
        image[foot_y - 60:foot_y, foot_x - 15:foot_x + 15] = 255
        frames.append(image)
    return frames + [np.zeros((FRAME_H, FRAME_W, 3), np.uint8) for _ in range(blank_after)]


def camera_analytics_settings(**extra: Any) -> AnalyticsSettings:
    # As in configs/demo-mall.yaml: in from the bottom edge, out by the right edge.
    return AnalyticsSettings.model_validate({
        "lines": [{"id": "door-in", "points": [[0, 170], [FRAME_W, 170]], "in_side": "left"},
                  {"id": "side-exit", "points": [[250, FRAME_H], [250, 0]], "in_side": "left"}],
        "zones": [{"id": "table", "polygon": [[100, 80], [240, 80], [240, 160], [100, 160]]}],
        "tracker": {"max_age": 0.5},
        **extra,
    })


def camera_envelope(event_type: str, data: dict, seq: int, ts: str | None = None) -> dict:
    event = Event(event_type, CAMERA, data) if ts is None else Event(event_type, CAMERA, data, ts=ts)
    return json.loads(envelope_json(event, site_id=SITE, gateway_id=GATEWAY, seq=seq))


def assert_valid_event(envelope: dict) -> None:
    assert_valid("envelope.schema.json", envelope)
    schema_file = event_schema_file(envelope["type"])
    assert schema_file is not None, f"no schema for {envelope['type']}"
    assert_valid(schema_file, envelope)


def test_real_camera_events_validate():
    analytics = CameraAnalytics(CAMERA, camera_analytics_settings(), BrightBoxDetector(), (FRAME_W, FRAME_H), fps=10)
    start = utc_timestamp()
    produced: list[tuple[str, dict]] = []
    for number, image in enumerate(walking_person_frames(), 1):
        produced += analytics.process(image, now=number / 10).events
    busy = analytics.interval_counts()
    idle = analytics.interval_counts()  # nothing analysed since: figures without data are None
    end = utc_timestamp()

    assert [t for t, _ in produced] == ["visit.entry", "zone.dwell", "visit.exit"]
    seq = 1
    for event_type, data in produced:
        envelope = camera_envelope(event_type, data, seq)
        assert_valid_event(envelope)
        schema = load_json(event_schema_file(event_type))
        assert set(schema["properties"]["data"]["required"]) == set(data)
        seq += 1
    assert produced[0][1]["line"] == "door-in" and produced[2][1]["line"] == "side-exit"

    # visit.counts: interval_counts() plus the interval's start and end, as gateway/visits.py sends it.
    assert busy["lines"] == {"door-in": {"in": 1, "out": 0}, "side-exit": {"in": 0, "out": 1}}
    assert busy["zones"]["table"]["dwells"] == 1 and busy["zones"]["table"]["peak_occupancy"] == 1
    assert idle["zones"]["table"] == {"avg_occupancy": None, "peak_occupancy": None, "mean_dwell_s": None,
                                      "dwells": 0}
    counts_schema = load_json(event_schema_file("visit.counts"))
    data_schema = counts_schema["properties"]["data"]
    zone_schema = data_schema["properties"]["zones"]["additionalProperties"]
    for figures in (busy, idle):
        data = {**figures, "start": start, "end": end}
        assert set(data_schema["required"]) == set(data)
        assert set(zone_schema["required"]) == set(figures["zones"]["table"])
        assert_valid_event(camera_envelope("visit.counts", data, seq))
        seq += 1

    # The schemas are strict where the code is.
    good = camera_envelope("visit.counts", {**busy, "start": start, "end": end}, seq)
    for break_it in (
        lambda d: d.pop("start"),
        lambda d: d["zones"]["table"].update(avg_occupancy=None),  # null average with a peak
        lambda d: d["zones"]["table"].update(mean_dwell_s=None),  # null mean with dwells
        lambda d: d["lines"]["door-in"].pop("out"),
        lambda d: d["lines"].update({"-bad": {"in": 0, "out": 0}}),
    ):
        bad = json.loads(json.dumps(good))
        break_it(bad["data"])
        assert_invalid("events/visit.counts.schema.json", bad)
    assert_invalid("events/visit.entry.schema.json", camera_envelope("visit.entry", {"camera": CAMERA, "line": "door-in"}, 1))
    assert_invalid("events/zone.dwell.schema.json",
                   camera_envelope("zone.dwell", {"camera": CAMERA, "zone": "table", "track_id": 0, "seconds": 1.0}, 1))


def test_camera_event_schemas_match_the_settings():
    item_id = LineSettings.model_json_schema()["properties"]["id"]["pattern"]
    assert item_id == ZoneSettings.model_json_schema()["properties"]["id"]["pattern"]
    for event_type, key in (("visit.entry", "line"), ("visit.exit", "line"), ("zone.dwell", "zone")):
        props = load_json(SCHEMAS / "events" / f"{event_type}.schema.json")["properties"]["data"]["properties"]
        assert props[key]["pattern"] == item_id
        assert props["camera"]["pattern"] == DEVICE_ID_PATTERN.pattern
    props = load_json(SCHEMAS / "events" / "visit.counts.schema.json")["properties"]["data"]["properties"]
    assert props["lines"]["propertyNames"]["pattern"] == props["zones"]["propertyNames"]["pattern"] == item_id
    assert props["camera"]["pattern"] == DEVICE_ID_PATTERN.pattern


class _Frame:
    def __init__(self, image: np.ndarray, index: int):
        self.image, self.index, self.ts = image, index, time.time()


class _PacedSource:
    """A camera driver's frame source (gateway/frames.py): the scenario at 40 frames/s, then empty frames."""

    def __init__(self, images: list[np.ndarray], period: float = 1 / 40):
        self.images, self.period = images, period
        self.blank = np.zeros_like(images[0])
        self._latest: _Frame | None = None

    def latest(self) -> _Frame | None:
        return self._latest

    def wait_next(self, after_index: int, timeout: float) -> _Frame:
        time.sleep(self.period)
        image = self.images[after_index] if after_index < len(self.images) else self.blank
        self._latest = _Frame(image, after_index + 1)
        return self._latest


class _CollectingBus:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def publish(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of_type(self, event_type: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.type == event_type]


def test_visit_service_events_validate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """What the visit service really publishes (visit.counts with start and end included), and the
    /v1/cameras fields that docs/vision.md explains."""
    from drivers.camera import CameraSettings
    from gateway import visits
    from gateway.frames import FrameHub

    import gateway.vision.detect as detect  # visits imports it when a camera starts

    monkeypatch.setattr(detect, "detector_for", lambda settings, models_dir, threads=1: BrightBoxDetector())
    camera = CameraSettings.model_validate({
        "id": CAMERA, "kind": "camera", "url": "rtsp://admin:secret@10.0.0.21/stream1", "fps": 60,
        "analytics": camera_analytics_settings(counts_interval="300ms").model_dump()})
    bus, hub = _CollectingBus(), FrameHub()
    hub.attach(CAMERA, _PacedSource(walking_person_frames()))
    service = visits.VisitService(bus, hub, tmp_path)
    service.apply([camera])
    try:
        def totals() -> tuple[int, int]:
            counts = [e.data["lines"] for e in bus.of_type("visit.counts")]
            return sum(c["door-in"]["in"] for c in counts), sum(c["side-exit"]["out"] for c in counts)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (totals() != (1, 1) or len(bus.of_type("visit.counts")) < 4):
            time.sleep(0.05)
        cameras = service.cameras()
    finally:
        service.stop()
    assert totals() == (1, 1), bus.events
    assert [e.type for e in bus.events if e.type != "visit.counts"] == ["visit.entry", "zone.dwell", "visit.exit"]
    for seq, event in enumerate(bus.events, 1):
        assert event.device_id == CAMERA
        assert_valid_event(json.loads(envelope_json(event, site_id=SITE, gateway_id=GATEWAY, seq=seq)))
    counts = [e.data for e in bus.of_type("visit.counts")]
    for before, after in itertools.pairwise(counts):
        assert after["start"] == before["end"]  # intervals follow each other
    assert "secret" not in json.dumps(cameras)

    # Every field of GET /v1/cameras, every stage time and every worker state is explained.
    vision = (DOCS / "vision.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z0-9_]+)`", vision))
    (camera_info,) = cameras
    for name in (*camera_info, *camera_info["stage_times"], "mean_ms", "p95_ms",
                 "starting", "running", "waiting_for_frames", "no_analytics", "error"):
        assert name in documented, f"docs/vision.md does not explain `{name}` (GET /v1/cameras)"


def test_topics_match_the_asyncapi_channels(asyncapi: dict):
    topics = Topics("acme/prod", SITE, GATEWAY)
    ids = {"prefix": "acme/prod", "site_id": SITE, "gateway_id": GATEWAY}
    channels = asyncapi["channels"]
    assert channels["eventBatches"]["address"].format(**ids, stream="parking") == topics.up("parking")
    assert channels["commandAcks"]["address"].format(**ids) == topics.ack
    assert channels["status"]["address"].format(**ids) == topics.status
    assert channels["commands"]["address"].format(**ids, command="+") == topics.down


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_real_acks_validate(loop_thread: asyncio.AbstractEventLoop):
    router = CommandRouter(loop_thread, timeout=5)

    async def ping(args: dict) -> dict:
        return {"pong": True, "args": args}

    async def refuse(args: dict) -> None:
        raise CommandError("not now")

    router.register("ping", ping)
    router.register("refuse", refuse)
    acks: list[dict] = []
    done = threading.Semaphore(0)

    def reply(ack: dict) -> None:
        acks.append(json.loads(json.dumps(ack, default=str)))  # as the uplink serialises it
        done.release()

    cases = [
        ("ping", b'{"command_id": "c-1", "args": {"x": 1}}'),
        ("ping", b'{"command_id": "c-1", "args": {"x": 1}}'),  # repeated: the first ack again
        ("refuse", b'{"command_id": "c-2"}'),
        ("nope", b'{"command_id": "c-3"}'),
        ("ping", b"not json"),
        ("ping", b"[1, 2]"),
        ("ping", b'{"command_id": "c-4", "args": [1]}'),
        ("ping", b'{"command_id": ""}'),
    ]
    for name, payload in cases:
        router.dispatch(name, payload, reply)
        assert done.acquire(timeout=10), f"no ack for {payload!r}"
    for ack in acks:
        assert_valid("ack.schema.json", ack)
    assert acks[0] == acks[1] and acks[0]["ok"] is True
    assert [a["ok"] for a in acks[2:]] == [False] * 6
    assert acks[4]["command_id"] is None and acks[4]["error"].startswith("malformed command: ")
    assert acks[6]["command_id"] == "c-4"
    assert acks[7]["command_id"] is None


def test_command_schema_matches_parse_command(asyncapi: dict):
    schema = load_json(SCHEMAS / "command.schema.json")
    assert schema["properties"]["command_id"]["maxLength"] == MAX_COMMAND_ID_LENGTH
    examples = schema["examples"] + [ex["payload"] for ex in asyncapi["components"]["messages"]["command"]["examples"]]
    for example in examples:
        assert_valid("command.schema.json", example)
        parse_command(json.dumps(example).encode())
    for bad in ({"args": {}}, {"command_id": ""}, {"command_id": "x" * 129}, {"command_id": "c", "args": [1]}):
        assert_invalid("command.schema.json", bad)
        with pytest.raises(ValueError):
            parse_command(json.dumps(bad).encode())
    assert asyncapi["components"]["parameters"]["command"]["enum"] == [
        "access.sync", "ads.model", "ads.resend", "ads.sync", "faces.delete", "faces.enroll", "ping", "points.sync", "reload-config"]


def test_real_status_payloads_validate(tmp_path: Path):
    from gateway.app import Gateway

    config = parse_config(
        f"site_id: {SITE}\ngateway_id: {GATEWAY}\nstorage:\n  path: {tmp_path / 'gw.db'}\n"
        "api:\n  token: 0123456789abcdef0123\n", "test.yaml", env={})
    gateway = Gateway(config)
    gateway.health.add("parking-b2", "http_ingest")
    gateway.health.add("parking-b3", "http_ingest")
    gateway.health.set("parking-b3", DeviceState.OFFLINE, "nothing posted yet")
    uplink = Uplink(UplinkConfig(), site_id=SITE, gateway_id=GATEWAY, outbox=gateway.outbox,
                    status=gateway._status_summary)
    for payload in (uplink._status(online=True), uplink._status(online=False, reason="connection lost"),
                    uplink._status(online=False, reason="stopped")):
        assert_valid("status.schema.json", json.loads(json.dumps(payload)))


# ------------------------------------------------------------------------------ access control
#
# Real access events: the real AccessService with a real EventBus and AccessStore (SQLite in
# tmp_path) gets a snapshot through its access.sync handler, then card reads (internal
# access.card_read events, as drivers/osdp.py emits them) and keypad entries. Only the reader's
# driver is a stand-in: it records what the service asks of it.

ACCESS_DEVICE = "osdp-bus-1"


def access_snapshot(version: int = 1) -> dict:
    return {
        "version": version, "mode": "snapshot",
        "persons": [{"person_id": "res-0042", "groups": ["residents"]},
                    {"person_id": "res-0077", "groups": ["residents"]},
                    {"person_id": "staff-7", "groups": ["staff"]}],
        "credentials": [
            {"kind": "card", "value": "h10301:12:3456", "person_id": "res-0042"},
            {"kind": "pin", "value": "2468", "person_id": "res-0042"},
            {"kind": "card", "value": "h10301:12:5000", "person_id": "res-0077",
             "valid_until": "2020-01-01T00:00:00+08:00"},
            {"kind": "card", "value": "h10301:12:6000", "person_id": "staff-7"},
            {"kind": "pin", "value": "1357", "person_id": "staff-7"}],
        "rules": [{"rule_id": "residents-gate", "door_id": "north-gate", "group": "residents", "windows": ALL_WEEK,
                   "methods": ["card", "pin"]},
                  {"rule_id": "staff-side", "door_id": "side-door", "group": "staff", "windows": ALL_WEEK,
                   "methods": ["card"]}],
        "anti_passback": [{"entry_door": "north-gate", "exit_door": "side-door", "mode": "soft"}],
    }


def card_read_event(facility: int, card: int, reader: int = 0, *, flip_bit: bool = False) -> Event:
    bits, data = encode_h10301(facility, card)
    if flip_bit:
        data = bytes([data[0], data[1] ^ 0x10, *data[2:]])  # one flipped bit: the parity check fails
    return Event("access.card_read", ACCESS_DEVICE, {"reader": reader, "reader_name": f"reader-{reader}",
                                                     "format": "wiegand", "bits": bits, "data": data.hex()},
                 internal=True)


def keypad_event(digits: str, reader: int = 0) -> Event:
    return Event("access.keypad", ACCESS_DEVICE, {"reader": reader, "reader_name": f"reader-{reader}",
                                                  "digits": digits}, internal=True)


def access_service(bus: EventBus, store: AccessStore, reader: FakeReaderDriver) -> AccessService:
    doors = [DoorConfig(id="north-gate", device=ACCESS_DEVICE, reader=0, open_for=4),
             DoorConfig(id="side-door", device=ACCESS_DEVICE, reader=1)]
    return AccessService(bus, store, store.load_policy(), doors, "Asia/Shanghai", {ACCESS_DEVICE: reader})


def test_real_access_events_validate(tmp_path: Path):
    reader = FakeReaderDriver()
    seen: list[Event] = []

    async def scenario() -> dict:
        bus = EventBus()
        bus.subscribe("seen", seen.append, ["access.granted", "access.denied", "door.opened"])
        with AccessStore(tmp_path / "access.db") as store:
            service = access_service(bus, store, reader)
            bus.subscribe("access", service.on_read, ["access.card_read", "access.keypad"])
            await bus.start()
            ack_result = await service.sync_command(access_snapshot())
            for event in (card_read_event(12, 3456),                 # granted
                          card_read_event(12, 3456),                 # granted again: soft anti-passback flag
                          keypad_event("2468"),                      # a PIN, granted (flagged too)
                          card_read_event(12, 9999),                 # unknown card
                          card_read_event(12, 3456, flip_bit=True),  # bad read
                          card_read_event(12, 5000),                 # expired card: person known
                          card_read_event(12, 6000),                 # staff at the residents' gate: no rule
                          keypad_event("1357", reader=1),            # staff PIN where only cards are allowed
                          card_read_event(12, 3456, reader=1)):      # resident at the staff door: no rule
                bus.publish(event)
            await bus.stop()
        return ack_result

    ack_result = asyncio.run(scenario())
    assert ack_result["applied"] is True
    assert_valid("commands/access.sync.ack.schema.json",
                 {"command_id": "c-1", "ok": True, "error": None, "result": ack_result})

    decisions = [e for e in seen if e.type in ("access.granted", "access.denied")]
    assert [(e.type, e.data["reason"].split(":")[0]) for e in decisions] == [
        ("access.granted", "granted"), ("access.granted", "granted"), ("access.granted", "granted"),
        ("access.denied", "unknown_credential"), ("access.denied", "bad_read"),
        ("access.denied", "credential_expired"), ("access.denied", "no_rule_for_door"),
        ("access.denied", "method_not_allowed"), ("access.denied", "no_rule_for_door")]
    assert decisions[1].data.get("anti_passback_violation") is True
    assert decisions[3].data["person_id"] is None and decisions[5].data["person_id"] == "res-0077"
    for seq, event in enumerate(decisions, 1):
        assert not event.internal
        envelope = json.loads(envelope_json(event, site_id=SITE, gateway_id=GATEWAY, seq=seq))
        assert_valid_event(envelope)
        assert envelope["device_id"] == ACCESS_DEVICE
        assert "3456" not in json.dumps(envelope["data"]) and "2468" not in json.dumps(envelope["data"])
    # door.opened is internal: it has no schema and never goes up.
    opened = [e for e in seen if e.type == "door.opened"]
    assert len(opened) == 3 and all(e.internal for e in opened) and event_schema_file("door.opened") is None
    assert reader.opened == [(0, 4.0)] * 3
    assert reader.feedback_given.count((0, True)) == 3

    # The denied schema lists exactly the refusal reasons of the code.
    denied = load_json(SCHEMAS / "events" / "access.denied.schema.json")["properties"]["data"]["properties"]
    assert denied["reason"]["anyOf"][0]["enum"] == [r.value for r in Reason if r is not Reason.GRANTED]
    granted = load_json(SCHEMAS / "events" / "access.granted.schema.json")["properties"]["data"]["properties"]
    assert granted["reason"]["const"] == Reason.GRANTED.value
    # A card number in an event is refused by the schema.
    wrong = json.loads(envelope_json(Event("access.granted", ACCESS_DEVICE, {
        "door": "north-gate", "method": "card", "person_id": "res-0042", "reason": "granted",
        "card": "h10301:12:3456"}), site_id=SITE, gateway_id=GATEWAY, seq=1))
    assert_invalid("events/access.granted.schema.json", wrong)


def test_ads_sync_schema_is_the_models_and_takes_the_demos_campaigns():
    """docs/schemas/commands/ads.sync.schema.json is what `gateway ads sync-schema` prints (regenerate
    it with that command when the model changes); the demo's catalog passes it and the gateway."""
    from gateway.ads.cli import sync_schema
    from gateway.ads.store import parse_sync as parse_ads_sync
    from simulator.demo_screens import DemoScreens

    schema_file = "commands/ads.sync.schema.json"
    assert load_json(SCHEMAS / schema_file) == json.loads(json.dumps(sync_schema())), \
        "stale: run `gateway ads sync-schema > docs/schemas/commands/ads.sync.schema.json`"
    screens = DemoScreens()
    try:
        catalog = screens.catalog()
    finally:
        screens.stop()
    assert_valid(schema_file, catalog)
    parse_ads_sync(catalog)
    for bad in ({"version": 1}, {"version": 0, "mode": "snapshot"}, {**catalog, "extra": 1},
                {**catalog, "creatives": [{**catalog["creatives"][0], "type": "hologram"}]},
                {**catalog, "campaigns": [{**catalog["campaigns"][0], "weight": 0}]}):
        assert_invalid(schema_file, bad)


def test_access_sync_schema_matches_parse_sync(asyncapi: dict):
    schema_file = "commands/access.sync.schema.json"
    accepted = [access_snapshot(), *load_json(SCHEMAS / schema_file)["examples"]]
    accepted += [m["payload"]["args"] for m in asyncapi["components"]["messages"]["accessSync"]["examples"]]
    accepted += [ex["args"] for ex in load_json(SCHEMAS / "commands/access.sync.command.schema.json")["examples"]]
    for message in accepted:
        assert_valid(schema_file, message)
        parse_sync(message)
    for example in asyncapi["components"]["messages"]["accessSync"]["examples"]:
        assert_valid("commands/access.sync.command.schema.json", example["payload"])
        parse_command(json.dumps(example["payload"]).encode())

    rule = access_snapshot()["rules"][0]
    refused = [
        {"version": 0, "mode": "snapshot"},
        {"version": "1", "mode": "snapshot"},
        {"version": 1, "mode": "full"},
        {"version": 1, "mode": "snapshot", "extra": True},
        {"version": 1, "mode": "snapshot", "remove": {"persons": ["res-0042"]}},
        {"version": 1, "mode": "delta", "credentials": [{"kind": "iris", "value": "x", "person_id": "p"}]},
        {"version": 1, "mode": "delta", "rules": [{**rule, "person_id": "res-0042"}]},  # group and person
        {"version": 1, "mode": "delta", "rules": [{**rule, "windows": []}]},
        {"version": 1, "mode": "delta", "rules": [{**rule, "windows": [{"day": "mon", "start": "08:00",
                                                                         "end": "25:00"}]}]},
        {"version": 1, "mode": "delta", "rules": [{**rule, "methods": []}]},
        {"version": 1, "mode": "delta", "persons": [{"person_id": ""}]},
        {"version": 1, "mode": "delta", "persons": [{"person_id": "p", "valid_from": "2026-11-22T08:00:00"}]},
        {"version": 1, "mode": "delta", "anti_passback": [{"entry_door": "a", "exit_door": "b", "mode": "warn"}]},
    ]
    for message in refused:
        assert_invalid(schema_file, message)
        with pytest.raises(SyncError):
            parse_sync(message)


def test_real_access_sync_acks_validate(tmp_path: Path, loop_thread: asyncio.AbstractEventLoop):
    store = AccessStore(tmp_path / "access.db")
    service = access_service(EventBus(), store, FakeReaderDriver())
    router = CommandRouter(loop_thread, timeout=30)
    router.register("access.sync", service.sync_command)
    acks: list[dict] = []
    done = threading.Semaphore(0)

    def reply(ack: dict) -> None:
        acks.append(json.loads(json.dumps(ack, default=str)))
        done.release()

    delta = {"version": 2, "mode": "delta", "remove": {"credentials": ["h10301:12:5000"]}}
    cases = [
        ("c-1", access_snapshot(1)),
        ("c-2", access_snapshot(1)),                   # the current version again: applied false
        ("c-3", {**delta, "version": 3}),              # a delta that skips a version: refused
        ("c-4", delta),                                # the next delta
        ("c-5", access_snapshot(1)),                   # lower than the current version: refused
        ("c-6", access_snapshot(9)),                   # a snapshot may jump
        ("c-7", {"version": 10, "mode": "delta", "credentials": [
            {"kind": "card", "value": "h10301:1:1", "person_id": "nobody"}]}),  # inconsistent: refused
    ]
    try:
        for command_id, args in cases:
            router.dispatch("access.sync", json.dumps({"command_id": command_id, "args": args}).encode(), reply)
            assert done.acquire(timeout=30), f"no ack for {command_id}"
        # Over the command payload limit: refused before it reaches the store (split the set).
        big = access_snapshot(20)
        big["persons"] += [{"person_id": f"p-{i:07d}", "groups": ["residents"]} for i in range(25000)]
        payload = json.dumps({"command_id": "c-8", "args": big}).encode()
        assert len(payload) > MAX_PAYLOAD_BYTES
        router.dispatch("access.sync", payload, reply)
        assert done.acquire(timeout=30)
    finally:
        store.close()
    for ack in acks:
        assert_valid("ack.schema.json", ack)
        assert_valid("commands/access.sync.ack.schema.json", ack)
    assert [a["ok"] for a in acks] == [True, True, False, True, False, True, False, False]
    assert acks[0]["result"]["applied"] is True and acks[1]["result"]["applied"] is False
    assert acks[1]["result"]["version"] == 1
    assert "expected version 2" in acks[2]["error"] and "expected version 3" in acks[4]["error"]
    assert acks[5]["result"] == {"version": 9, "applied": True, "persons": 3, "credentials": 5, "rules": 2,
                                 "anti_passback": 1}
    assert acks[7]["error"].startswith("malformed command: payload larger than")
    assert_invalid("commands/access.sync.ack.schema.json",
                   {"command_id": "c", "ok": True, "error": None, "result": {"version": 1}})



# --------------------------------------------------------------------------------- asyncapi


def test_asyncapi_document(asyncapi: dict):
    assert asyncapi["asyncapi"] == "3.0.0"
    assert {"eventBatches", "commandAcks", "status", "commands"} <= set(asyncapi["channels"])
    params = asyncapi["channels"]["eventBatches"]["parameters"]
    assert set(params) == {"prefix", "site_id", "gateway_id", "stream"}
    for op in asyncapi["operations"].values():
        channel = resolve_pointer(asyncapi, op["channel"]["$ref"].removeprefix("#"))
        expected = "receive" if "/down/" in channel["address"] else "send"
        assert op["action"] == expected, op
    for ref in walk_refs(asyncapi):
        target, fragment = urldefrag(ref)
        if target:
            assert (DOCS / target).is_file(), f"asyncapi.yaml: $ref {ref} does not resolve to a file"
            if fragment:
                resolve_pointer(load_json(DOCS / target), fragment)
        else:
            resolve_pointer(asyncapi, fragment)  # raises KeyError if it points nowhere


def test_asyncapi_examples_validate(asyncapi: dict):
    for name, message in asyncapi["components"]["messages"].items():
        schema_file = DOCS / message["payload"]["$ref"]
        assert message.get("examples"), f"message {name} has no example"
        for example in message["examples"]:
            assert_valid(schema_file.resolve(), example["payload"])
    # Envelopes in the batch examples also match their type's schema, where the gateway defines one.
    for example in asyncapi["components"]["messages"]["eventBatch"]["examples"]:
        for envelope in example["payload"]["events"]:
            if schema_file := event_schema_file(envelope["type"]):
                assert_valid(schema_file, envelope)


def test_asyncapi_describes_every_event_type_the_gateway_produces(asyncapi: dict):
    """Each event schema is the payload of a message (an envelope inside an event batch), and an
    example batch shows the type on its stream."""
    messages = asyncapi["components"]["messages"]
    payloads = {m["payload"]["$ref"] for m in messages.values()}
    batch_types = {e["type"] for ex in messages["eventBatch"]["examples"] for e in ex["payload"]["events"]}
    streams = asyncapi["components"]["parameters"]["stream"]["examples"]
    for event_type in GATEWAY_EVENT_TYPES:
        assert f"./schemas/events/{event_type}.schema.json" in payloads, f"no asyncapi message for {event_type}"
        assert event_type in batch_types, f"no eventBatch example with a {event_type} event"
        assert event_type.split(".")[0] in streams


# ----------------------------------------------------------------------------------- config


def _object_schemas(node: Any, defs: dict) -> Iterator[dict]:
    """The object schemas a property's schema refers to (through $ref, anyOf, oneOf, items)."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield from _object_schemas(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        if "properties" in node:
            yield node
        for key in ("anyOf", "oneOf", "allOf"):
            for item in node.get(key, []):
                yield from _object_schemas(item, defs)
        if "items" in node:
            yield from _object_schemas(node["items"], defs)


def config_sections() -> dict[str, tuple[set[str], dict]]:
    """{section heading: (keys, object schema)} for every section of the site config, walked from
    the pydantic JSON schema. Device keys common to all kinds go under `devices`, the rest under the kind."""
    schema = site_model().model_json_schema()
    defs = schema.get("$defs", {})
    sections: dict[str, tuple[set[str], dict]] = {"Top level": (set(schema["properties"]), schema)}
    common = set(DeviceConfig.model_fields)

    def walk(name: str, node: dict) -> None:
        for key, prop in node["properties"].items():
            for child in _object_schemas(prop, defs):
                if key == "devices" and not name:
                    kind = child["properties"]["kind"]["const"]
                    sections["devices"] = (set(child["properties"]) & common, child)
                    sections[kind] = (set(child["properties"]) - common, child)
                    walk(kind, child)
                else:
                    child_name = f"{name}.{key}" if name else key
                    sections[child_name] = (set(child["properties"]), child)
                    walk(child_name, child)

    walk("", schema)
    return sections


def markdown_sections(text: str) -> list[tuple[str, str]]:
    """(heading line, body) pairs, each body running to the next heading of any level."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # code blocks have no headings
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.MULTILINE)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def test_every_config_key_is_documented():
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    sections = markdown_sections(text)
    found = config_sections()
    assert {"uplink", "uplink.tls", "storage", "api", "models", "devices", "http_ingest", "camera", "camera.analytics",
            "camera.analytics.lines", "camera.analytics.zones", "camera.analytics.motion",
            "camera.analytics.tracker"} <= set(found), "the config walker missed a section"
    for name, (keys, _) in found.items():
        marker = name if name == "Top level" else f"`{name}`"
        matches = [body for heading, body in sections if marker in heading]
        assert matches, f"docs/config.md has no heading for {marker}"
        for key in keys:
            assert any(f"`{key}`" in body for body in matches), \
                f"config key {name}.{key} is not documented under its heading in docs/config.md"


def test_every_device_kind_is_documented():
    headings = [heading for heading, _ in markdown_sections((DOCS / "config.md").read_text(encoding="utf-8"))]
    for kind in driver_registry.drivers():
        assert f"#### `{kind}`" in headings, f"docs/config.md has no level-4 heading for the device kind {kind}"


def _default_documented(cell: str, prop: dict, required: bool) -> bool:
    if required:
        return "required" in cell
    if "default" not in prop:  # a default_factory (lists, sections): not in the JSON schema
        return True
    default = prop["default"]
    if default is None:
        return "not set" in cell
    token = re.search(r"`([^`]*)`", cell)
    if token is None:
        return False
    text = token.group(1)
    if yaml.safe_load(text) == default:
        return True
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        for parse in (parse_duration, lambda t: int(TypeAdapter(ByteSize).validate_python(t))):
            try:
                if math.isclose(parse(text), default):
                    return True
            except (ValueError, ValidationError):
                pass
    return False


def test_config_defaults_in_docs_match_the_models():
    """Each key's row in docs/config.md (| `key` | type | default | meaning |) states the model's default."""
    sections = markdown_sections((DOCS / "config.md").read_text(encoding="utf-8"))
    checked = 0
    for name, (keys, model) in config_sections().items():
        marker = name if name == "Top level" else f"`{name}`"
        body = "".join(b for heading, b in sections if marker in heading)
        rows = {m.group(1): m.group(3) for m in re.finditer(
            r"^\| `([A-Za-z_]+)` \|([^|]*)\|([^|]*)\|", body, re.MULTILINE)}
        for key in keys:
            assert key in rows, f"{name}.{key}: no table row | `{key}` | type | default | meaning |"
            required = key in model.get("required", [])
            assert _default_documented(rows[key], model["properties"][key], required), \
                f"{name}.{key}: docs say default {rows[key].strip()!r}, the model says " \
                f"{'required' if required else model['properties'][key].get('default')!r}"
            checked += 1
    assert checked >= 30


def test_markdown_json_blocks_parse():
    for path in DOCS.glob("*.md"):
        for block in re.findall(r"```json\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL):
            json.loads(block)


def test_mqtt_doc_examples_validate():
    """The envelope example in docs/mqtt.md is a valid envelope."""
    text = (DOCS / "mqtt.md").read_text(encoding="utf-8")
    envelopes = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]
    envelopes = [e for e in envelopes if isinstance(e, dict) and "seq" in e and "event_id" in e]
    assert envelopes, "docs/mqtt.md shows no envelope example"
    for envelope in envelopes:
        assert_valid("envelope.schema.json", envelope)
        if schema_file := event_schema_file(envelope["type"]):
            assert_valid(schema_file, envelope)


def documented_commands() -> Iterator[tuple[str, list[str]]]:
    """(file, argv) of every `gateway ...` line in the shell blocks of docs/*.md and README.md."""
    for path in (*sorted(DOCS.glob("*.md")), ROOT / "README.md"):
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r" [>|] ", line)[0]
                words = shlex.split(line, comments=True)
                for prefix in (["gateway"], ["python", "-m", "gateway"], [".venv/bin/python", "-m", "gateway"]):
                    if words[:len(prefix)] == prefix:
                        yield path.name, words[len(prefix):]


def test_documented_commands_parse():
    """Every gateway command shown in the docs is one the command line accepts."""
    from gateway.cli import build_parser

    commands = list(documented_commands())
    assert {argv[0] for _, argv in commands} >= {"run", "check-config", "models", "vision"}
    for name, argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `gateway {' '.join(argv)}` is not a valid command")


def test_systemd_unit_runs_a_real_command():
    from gateway.cli import build_parser

    unit = (DOCS / "deploy" / "gateway.service").read_text(encoding="utf-8")
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", unit, re.MULTILINE)
    assert exec_start and exec_start.group(1).endswith("/gateway")
    args = build_parser().parse_args(exec_start.group(2).split())
    assert args.command == "run"
    for line in ("Restart=always", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM",
                 "SupplementaryGroups=dialout", "WorkingDirectory=/var/lib/gateway"):
        assert re.search(rf"^{re.escape(line)}$", unit, re.MULTILINE), line
    assert not re.search(r"^PrivateDevices=(yes|true)", unit, re.MULTILINE), "PrivateDevices hides serial ports"

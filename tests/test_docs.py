"""Keep docs/ true to the code: schemas are valid and match what the code really produces,
the AsyncAPI document's references resolve, and every config key is documented.

Needs the `jsonschema` package (>= 4.18, with `referencing`), a test extra.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urldefrag

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
from gateway.commands import MAX_COMMAND_ID_LENGTH, CommandError, CommandRouter, parse_command  # noqa: E402
from gateway.config import UplinkConfig, parse_config, site_model  # noqa: E402
from gateway.events import EVENT_TYPE_PATTERN, Event, envelope_json  # noqa: E402
from gateway.health import DeviceHealth, DeviceState  # noqa: E402
from gateway.outbox import ALARM_EVENT_TYPE, Outbox  # noqa: E402
from gateway.uplink import Topics, Uplink, batch_messages  # noqa: E402
from gateway.validation import parse_duration  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMAS = DOCS / "schemas"
SITE, GATEWAY = "mall-sh-001", "gw-main"


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
    for name in ("architecture.md", "config.md", "mqtt.md", "asyncapi.yaml", "deploy/gateway.service",
                 "schemas/envelope.schema.json", "schemas/batch.schema.json", "schemas/ack.schema.json",
                 "schemas/status.schema.json", "schemas/command.schema.json",
                 "schemas/events/device.status.schema.json", "schemas/events/gateway.alarm.schema.json"):
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
    sample = json.loads(envelope_json(Event("parking.entry", "parking-b2", {}), site_id=SITE, gateway_id=GATEWAY,
                                      seq=1))
    assert set(props) == set(sample)


def test_event_schemas_exist_for_the_types_the_gateway_produces():
    for event_type in ("device.status", ALARM_EVENT_TYPE):
        schema = load_json(SCHEMAS / "events" / f"{event_type}.schema.json")
        assert schema["properties"]["type"]["const"] == event_type


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
    assert asyncapi["components"]["parameters"]["command"]["enum"] == ["ping", "reload-config"]


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
    assert {"uplink", "uplink.tls", "storage", "api", "devices", "http_ingest"} <= set(found)
    for name, (keys, _) in found.items():
        marker = name if name == "Top level" else f"`{name}`"
        matches = [body for heading, body in sections if marker in heading]
        assert matches, f"docs/config.md has no heading for {marker}"
        for key in keys:
            assert any(f"`{key}`" in body for body in matches), \
                f"config key {name}.{key} is not documented under its heading in docs/config.md"


def test_every_device_kind_is_documented():
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for kind in driver_registry.drivers():
        assert f"`{kind}`" in text


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

"""Site config: the example files, the `check-config` / `config-schema` commands, located errors,
environment substitution, units, and a property test that the parser only ever raises ConfigError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import registry
from gateway.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "configs").glob("*.yaml"))
TOKEN = "a-token-of-24-characters"

# Line numbers below refer to this text (line 1 is `site_id`).
GOOD = f"""\
site_id: mall-1
gateway_id: gw-1
uplink:
  host: 127.0.0.1
  port: 1883
storage:
  path: var/test.db
  max_bytes: 2GiB
  max_age: 7d
api:
  port: 8080
  token: {TOKEN}
devices:
  - id: parking-b2
    kind: http_ingest
    stale_after: 2m
  - id: parking-b3
    kind: http_ingest
  - kind: http_ingest
    name: no id here
"""
# Without the last device (which has no id), GOOD is a valid config.
VALID = GOOD.rsplit("  - kind: http_ingest", 1)[0]


def parse(text: str, env: dict[str, str] | None = None):
    return parse_config(textwrap.dedent(text), "site.yaml", env={} if env is None else env)


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str, int | None]]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return [(p.location, p.message, p.line) for p in info.value.problems]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------- example files


def test_there_are_two_example_configs():
    assert [p.name for p in EXAMPLES] == ["demo-community.yaml", "demo-mall.yaml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_validate(path):
    config = load_config(path, env={})
    assert config.site_id and config.gateway_id
    assert config.devices and {d.kind for d in config.devices} <= set(registry.drivers())
    assert config.api.token.get_secret_value() == "demo-token-change-me-0123456789"  # the ${..:-default}


def test_demo_mall_values():
    config = load_config(ROOT / "configs" / "demo-mall.yaml", env={"GATEWAY_MQTT_HOST": "broker.local"})
    assert config.uplink.host == "broker.local"
    assert config.uplink.linger == pytest.approx(0.05)
    assert int(config.storage.max_bytes) == 2 * 1024**3
    assert config.storage.max_age == 30 * 86400
    assert [d.id for d in config.devices] == ["parking-b2", "parking-b3", "cam-entrance-1", "osdp-staff", "osdp-gate",
                                              "cam-staff-gate", "lounge-terminals", "till-s101", "scanner-s101",
                                              "till-s205", "sign-lobby"]
    assert [(s.id, s.door, s.camera, s.sign) for s in config.screens] == [
        ("atrium-1", None, None, None), ("staff-gate-screen", "staff-face-gate", "cam-staff-gate", None),
        ("lobby-sign", None, None, "sign-lobby")]
    assert config.ads.report_partial == 10
    assert config.points.enabled and config.points.campaigns[0].weekdays == ["tue"]
    assert config.faces.enabled and [d.methods for d in config.access.doors] == [
        ["card", "pin", "qr"], ["card", "pin", "face"], ["card", "face"]]
    assert config.devices[0].stale_after == 120


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems[0].message == "file not found"


# ---------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_check_config_ok_exits_0(path):
    result = cli("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path}: ok" in result.stdout


def test_check_config_bad_file_exits_1_with_located_problems(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("port: 1883", "port: 99999").replace("max_age: 7d", "max_age: 7q"))
    result = cli("check-config", str(bad))
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert f"{bad}:19: devices[2].id: field required" in out
    assert any(line.startswith(f"{bad}:5: uplink.port: ") for line in out), out
    assert any(line.startswith(f"{bad}:9: storage.max_age: expected a duration") for line in out), out
    assert len(out) == 3


def test_check_config_exits_1_if_any_file_is_bad(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(VALID)
    bad.write_text("site_id: [\n")
    result = cli("check-config", str(good), str(bad))
    assert result.returncode == 1
    assert f"{good}: ok (site mall-1, gateway gw-1, 2 devices)" in result.stdout
    assert f"{bad}:" in result.stdout and "not valid YAML" in result.stdout


def test_config_schema_is_json_with_devices():
    result = cli("config-schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "devices" in schema["properties"]
    assert schema["properties"]["devices"]["type"] == "array"
    assert set(schema["required"]) >= {"site_id", "gateway_id", "api"}


# ------------------------------------------------------------------------- located problems


def test_valid_text_parses():
    config = parse(VALID)
    assert [d.id for d in config.devices] == ["parking-b2", "parking-b3"]
    assert config.devices[1].stale_after == 300  # the driver's default


def test_missing_device_id_has_location_and_line():
    assert problems(GOOD) == [("devices[2].id", "field required", 19)]


def test_problem_renders_with_source_and_line():
    with pytest.raises(ConfigError) as info:
        parse(GOOD)
    assert str(info.value) == "site.yaml:19: devices[2].id: field required"


def test_unknown_device_kind():
    text = VALID.replace("  - id: parking-b3\n    kind: http_ingest", "  - id: parking-b3\n    kind: modbus_tcp")
    [(location, message, line)] = problems(text)
    assert location == "devices[1].kind"
    assert "unknown device kind 'modbus_tcp'" in message and "http_ingest" in message
    assert line == 18  # the `kind:` line


def test_device_without_kind():
    [(location, message, line)] = problems(VALID + "  - id: x\n")
    assert (location, line) == ("devices[2].kind", 19)


def test_unknown_top_level_key():
    assert problems(VALID + "colour: blue\n") == [("colour", "unknown field (check the spelling)", 19)]


def test_unknown_nested_key_is_located():
    text = VALID.replace("  port: 1883", "  port: 1883\n  hots: x")
    assert problems(text) == [("uplink.hots", "unknown field (check the spelling)", 6)]


def test_every_problem_is_reported():
    text = VALID.replace("site_id: mall-1\n", "").replace("port: 1883", "port: none")
    found = {location for location, _, _ in problems(text)}
    assert found == {"site_id", "uplink.port"}


def test_duplicate_device_ids():
    text = VALID.replace("id: parking-b3", "id: parking-b2")
    [(location, message, _)] = problems(text)
    assert message == "device id 'parking-b2' is used twice"


def test_short_api_token():
    text = VALID.replace(TOKEN, "short-token")
    assert problems(text) == [("api.token", "token must be at least 16 characters", 12)]


def test_api_token_is_required():
    text = VALID.replace(f"  token: {TOKEN}\n", "")
    assert problems(text) == [("api.token", "field required", 10)]


def test_tls_cert_without_key():
    text = VALID.replace("  port: 1883", "  port: 1883\n  tls:\n    cert: client.pem")
    [(location, message, line)] = problems(text)
    assert (location, message, line) == ("uplink.tls", "cert and key must be given together", 6)


def test_tls_cert_with_key_is_fine():
    text = VALID.replace("  port: 1883", "  port: 1883\n  tls:\n    cert: client.pem\n    key: client.key")
    config = parse(text)
    assert config.uplink.tls.cert == Path("client.pem")


# ------------------------------------------------------------------------------ YAML shape


def test_invalid_yaml_reports_its_line():
    text = VALID.replace("  max_age: 7d", "  max_age: [7d")
    [(location, message, line)] = problems(text)
    assert location == "" and message.startswith("not valid YAML")
    assert line is not None and line >= 9


def test_tab_indentation_reports_its_line():
    [(_, message, line)] = problems("site_id: a\napi:\n\ttoken: x\n")
    assert message.startswith("not valid YAML") and line == 3


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "42\n"])
def test_non_mapping_file(text):
    [(location, message, line)] = problems(text)
    assert message == "the file must be a YAML mapping (key: value lines)" and line == 1


@pytest.mark.parametrize("text", [
    "site_id: 2001-02-30\n",           # a date-looking scalar PyYAML fails to construct
    "site_id: !!int x\n",
    "site_id: !!timestamp x\n",
    "site_id: " + "[" * 3000 + "]" * 3000 + "\n",
    "site_id: &loop [*loop]\n",      # an anchor that contains itself
])
def test_yaml_that_breaks_the_loader_is_a_config_error(text):
    assert problems(text)


# -------------------------------------------------------------------- environment variables


def test_env_substitution():
    text = VALID.replace("host: 127.0.0.1", "host: ${MQTT_HOST}").replace(TOKEN, "${API_TOKEN}")
    config = parse(text, {"MQTT_HOST": "broker.example", "API_TOKEN": "from-the-environment"})
    assert config.uplink.host == "broker.example"
    assert config.api.token.get_secret_value() == "from-the-environment"


def test_env_default_used_only_when_unset():
    text = VALID.replace("host: 127.0.0.1", "host: ${MQTT_HOST:-fallback.local}")
    assert parse(text).uplink.host == "fallback.local"
    assert parse(text, {"MQTT_HOST": "set.local"}).uplink.host == "set.local"


def test_env_empty_default():
    text = VALID.replace("  port: 1883", "  port: 1883\n  username: ${USER_NAME:-}")
    assert parse(text).uplink.username == ""


def test_env_substitution_inside_a_longer_string():
    text = VALID.replace("path: var/test.db", "path: ${DATA:-/data}/${SITE}.db")
    assert parse(text, {"SITE": "mall-1"}).storage.path == Path("/data/mall-1.db")


def test_double_dollar_is_a_literal_dollar():
    text = VALID.replace(TOKEN, "pa$$word-${NOT_A_VAR}-$${LITERAL}")
    config = parse(text, {"NOT_A_VAR": "x"})
    assert config.api.token.get_secret_value() == "pa$word-x-${LITERAL}"


def test_missing_env_var_is_reported_at_its_location():
    text = VALID.replace("host: 127.0.0.1", "host: ${MQTT_HOST}")
    assert problems(text) == [("uplink.host", "environment variable MQTT_HOST is not set", 4)]


def test_missing_env_var_in_a_device():
    text = VALID.replace("stale_after: 2m", "stale_after: ${STALE}")
    found = problems(text)
    assert ("devices[0].stale_after", "environment variable STALE is not set", 16) in found


def test_check_config_reads_the_process_environment(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text(VALID.replace(TOKEN, "${GATEWAY_TEST_TOKEN}"))
    result = cli("check-config", str(path))
    assert result.returncode == 1
    assert f"{path}:12: api.token: environment variable GATEWAY_TEST_TOKEN is not set" in result.stdout
    env = {**os.environ, "GATEWAY_TEST_TOKEN": TOKEN}
    ok = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout


# ----------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("12h", 43200), ("7d", 604800), ("1.5s", 1.5), ("45", 45), ("0", 0),
])
def test_durations(text, seconds):
    config = parse(VALID.replace("max_age: 7d", f"max_age: {text}"))
    assert config.storage.max_age == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5q", "-5s", "s", "true", "5 minutes"])
def test_bad_durations(text):
    [(location, message, line)] = problems(VALID.replace("max_age: 7d", f"max_age: {text}"))
    assert (location, line) == ("storage.max_age", 9)
    assert "duration" in message


@pytest.mark.parametrize("text, size", [("2GiB", 2 * 1024**3), ("512MiB", 512 * 1024**2), ("1kb", 1000), ("4096", 4096)])
def test_byte_sizes(text, size):
    assert int(parse(VALID.replace("max_bytes: 2GiB", f"max_bytes: {text}")).storage.max_bytes) == size


def test_bad_byte_size():
    [(location, _, line)] = problems(VALID.replace("max_bytes: 2GiB", "max_bytes: lots"))
    assert (location, line) == ("storage.max_bytes", 8)


# ---------------------------------------------------------------------------- property tests

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
yamlish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10) | st.integers(), inner, max_size=4),
    max_leaves=20,
)
known_keys = st.sampled_from(["site_id", "gateway_id", "uplink", "storage", "api", "devices", "log_level",
                              "host", "port", "token", "tls", "cert", "key", "id", "kind", "stale_after",
                              "max_bytes", "max_age", "linger", "enabled"])
config_like = st.recursive(
    scalars | st.sampled_from(["http_ingest", "5m", "2GiB", "${X}", "${X:-1}", "$$", TOKEN]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(known_keys | st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)


def _parses_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yaml", env={"X": "1"})
    except ConfigError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        str(exc)  # renders
    else:
        assert config.site_id and config.api.token


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_parses_or_raises_config_error(text):
    _parses_or_config_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(known_keys | st.text(max_size=10), config_like | yamlish, max_size=8))
def test_arbitrary_yaml_mappings_parse_or_raise_config_error(data):
    _parses_or_config_error(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["site_id", "gateway_id", "uplink", "storage", "api", "devices", "log_level", "other"]),
       config_like)
def test_one_section_replaced_parses_or_raises_config_error(section, value):
    data = yaml.safe_load(VALID)
    data[section] = value
    _parses_or_config_error(yaml.safe_dump(data, allow_unicode=True))


def test_yaml_alias_bomb_is_refused_quickly_with_a_clear_error():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefg", "bcdefgh"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_config("\n".join(levels) + "\n")


def test_byte_sizes_take_units_everywhere():
    config = parse_config("site_id: m1\ngateway_id: g1\napi: {token: 0123456789abcdef, max_body_bytes: 1MiB}\n"
                          "uplink: {batch_max_bytes: 64KiB}\n")
    assert config.api.max_body_bytes == 1024 * 1024
    assert config.uplink.batch_max_bytes == 64 * 1024


# ------------------------------------------------------------------------- doors and faces

DOORS = VALID + """\
  - id: lobby-cam
    kind: camera
    url: rtsp://10.0.0.9/stream
access:
  doors:
    - id: lobby
      device: parking-b2
      reader: 1
      methods: {methods}
      {camera}
faces:
  enabled: {enabled}
"""


def doors(methods="[card, face]", camera="camera: lobby-cam", enabled="true") -> str:
    return DOORS.format(methods=methods, camera=camera, enabled=enabled)


def test_a_face_door_with_a_camera_validates():
    config = parse(doors())
    door = config.access.doors[0]
    assert door.methods == ["card", "face"] and door.camera == "lobby-cam" and config.faces.enabled
    assert config.faces_store_path == Path("var/faces.db") and config.faces_key_path == Path("var/faces.key")
    assert config.access.keep_events == 30 * 86400


@pytest.mark.parametrize("text, message", [
    (doors(methods="[face]"), "face cannot be the only method"),
    (doors(enabled="false"), "face recognition is off at this site"),
    (doors(methods="[card]"), "a camera is set but face is not among its methods"),
    (doors(camera="camera: parking-b3"), "camera 'parking-b3' is not a camera"),
    (doors(methods="[card, card]"), "methods are listed twice"),
    (doors(methods="[card, iris]"), "input should be 'card'"),
])
def test_door_methods_that_are_refused(text, message):
    found = problems(text)
    assert any(message in said for _, said, _ in found), found


def test_face_recognition_is_off_by_default():
    assert parse(VALID).faces.enabled is False
    assert parse(doors(methods="[card, pin]", camera="")).access.doors[0].camera is None

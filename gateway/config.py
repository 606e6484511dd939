"""Site configuration: YAML files validated by pydantic models.

`load_config` reads a file, substitutes `${VAR}` / `${VAR:-default}` from the environment (so that
secrets need not live in the file), validates everything and raises `ConfigError` listing every
problem with its location and line (`demo.yaml:14: devices[2].port: field required`).

Device sections are typed by their driver: each driver kind registers a settings model (a subclass of
`DeviceConfig`) and the site model is built over the kinds known at load time.
"""

from __future__ import annotations

import os
import sys
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from drivers import registry
from drivers.base import DeviceConfig

from .ads.model import Screen
from .points.rules import PointsConfig
from .pos.fields import BUILTIN_TEMPLATES, ReceiptTemplate
from .validation import Duration, StrictModel

# ----------------------------------------------------------------------------------- sections


class TlsConfig(StrictModel):
    ca: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key: Path | None = Field(None, description="client private key (PEM) for mutual TLS")
    insecure_skip_verify: bool = Field(False, description="accept any broker certificate (testing only)")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> "TlsConfig":
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self


class UplinkConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = Field(None, description="defaults to gw-{site_id}-{gateway_id}")
    tls: TlsConfig | None = None
    username: str | None = None
    password: SecretStr | None = None
    topic_prefix: str = Field("site", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    batch_max_events: int = Field(500, ge=1, le=10_000)
    batch_max_bytes: ByteSize = Field(ByteSize(256 * 1024), ge=1024, le=16 * 1024 * 1024)
    linger: Duration = Field(0.05, description="how long to wait for a batch to fill when the backlog is small")
    max_inflight: int = Field(16, ge=1, le=1000, description="batches published and not yet acknowledged")
    keepalive: Duration = 30.0
    reconnect_min: Duration = 1.0
    reconnect_max: Duration = 60.0


class StorageConfig(StrictModel):
    path: Path = Path("var/gateway.db")
    max_bytes: ByteSize = Field(ByteSize(1024**3), description="cap on the events waiting to go up")
    max_age: Duration = Field(30 * 86400.0, description="events older than this are dropped unless critical")
    synchronous: Literal["full", "normal"] = Field(
        "full", description="full: fsync every commit (survives power loss); normal: survives process crashes"
    )
    never_drop: list[str] = Field(
        default_factory=lambda: ["access", "sale", "points", "ad", "gateway"],
        description="event types or stream prefixes that are kept even over the caps",
    )
    drop_first: list[str] = Field(
        default_factory=lambda: ["visit.counts", "zone.occupancy", "device.status"],
        description="low-value periodic event types dropped first when over the caps",
    )
    ingest_dedupe_window: Duration = Field(7 * 86400.0, description="how long ingested event ids are remembered")


class ApiConfig(StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr = Field(..., description="bearer token for /v1/ingest and other protected endpoints")
    max_body_bytes: ByteSize = Field(ByteSize(4 * 1024 * 1024), ge=1024)

    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, token: SecretStr) -> SecretStr:
        if len(token.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters")
        return token


class ModelsConfig(StrictModel):
    dir: Path | None = Field(None, description="where model files are; default $GATEWAY_MODELS_DIR, else var/models")
    threads: int = Field(1, ge=1, le=16, description="onnxruntime threads per inference (a small CPU wants 1)")


AccessMethod = Literal["card", "pin", "qr", "face"]
_DOOR_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class DoorConfig(StrictModel):
    id: str = Field(..., pattern=_DOOR_ID)
    device: str = Field(..., description="the access-control device (an osdp bus, a face-terminal listener) "
                                         "whose reader or terminal serves this door")
    reader: Annotated[int, Field(ge=0, le=126)] | Annotated[str, Field(pattern=_DOOR_ID)] = Field(
        0, description="the reader's address on an osdp bus, or the terminal's id on a face-terminal device")
    open_for: Duration | None = Field(None, gt=0, le=25.5, description="how long the door output is pulsed on a "
                                      "grant (OSDP counts at most 25.5 s); default: the device's own setting")
    methods: list[AccessMethod] = Field(
        default_factory=lambda: ["card", "pin", "qr"],
        description="what may open this door; `face` needs faces.enabled and never stands alone")
    camera: str | None = Field(None, description="a camera device whose faces the gateway recognises to "
                                                 "open this door (a face gate with only a camera)")

    @model_validator(mode="after")
    def _face_never_alone(self) -> "DoorConfig":
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods are listed twice")
        if set(self.methods) == {"face"}:
            # PIPL and the 2025 face recognition measures: people must be able to refuse face
            # recognition and still get in, so every face door also takes a card, PIN or QR code.
            raise ValueError(f"door {self.id}: face cannot be the only method; add card, pin or qr")
        if self.camera is not None and "face" not in self.methods:
            raise ValueError(f"door {self.id}: a camera is set but face is not among its methods")
        return self


class AccessConfig(StrictModel):
    store: Path | None = Field(None, description="credentials and rules received by access.sync; "
                                                 "default: access.db beside storage.path")
    keep_events: Duration = Field(30 * 86400.0, gt=0, description="how long the local log of access "
                                  "decisions (for engineers: `gateway access log`) is kept")
    doors: list[DoorConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_door_per_reader(self) -> "AccessConfig":
        seen: dict[tuple[str, int | str], str] = {}
        for door in self.doors:
            key = (door.device, door.reader)
            if key in seen:
                raise ValueError(f"doors {seen[key]} and {door.id} use the same reader {door.device}/{door.reader}")
            seen[key] = door.id
        if len({d.id for d in self.doors}) != len(self.doors):
            raise ValueError("door ids must be unique")
        return self


class FaceMatchConfig(StrictModel):
    threshold: float = Field(0.45, ge=-1, le=1, description="cosine a face must reach to count as a member; "
                             "choose it with `gateway faces calibrate`")
    margin: float = Field(0.05, ge=0, le=2, description="how far the best member must be above the next one")
    unknown_band: float = Field(0.10, ge=0, le=2, description="scores this far below the threshold are "
                                "\"unknown\" rather than \"stranger\"")
    min_face_px: float = Field(48.0, ge=0, description="faces smaller than this (shorter side) are ignored")
    confirm_n: int = Field(2, ge=1, le=30, description="frames that must agree on the person ...")
    confirm_m: int = Field(3, ge=1, le=30, description="... out of the last this many frames")
    cooldown: Duration = Field(10.0, description="a person matched is not matched again at the gate for this long")

    @model_validator(mode="after")
    def _n_of_m(self) -> "FaceMatchConfig":
        if self.confirm_n > self.confirm_m:
            raise ValueError("confirm_n must not exceed confirm_m")
        return self


class FacesConfig(StrictModel):
    enabled: bool = Field(False, description="face recognition at this site; off unless switched on")
    store: Path | None = Field(None, description="encrypted templates, consents and the audit log; "
                                                 "default: faces.db beside storage.path")
    key_file: Path | None = Field(None, description="the 32-byte key that encrypts the templates (created "
                                                    "with mode 0600 on first use); default: faces.key beside the store")
    embedder: str = Field("mobilefacenet", description="face embedding model in models/manifest.yaml")
    gate_fps: float = Field(10.0, gt=0, le=30, description="frames per second analysed at each face gate")
    match: FaceMatchConfig = Field(default_factory=FaceMatchConfig)
    warn_enrolled: int = Field(90_000, ge=1, description="raise a gateway.warning as the enrolled persons "
                               "reach this many (search stays fast up to 100,000)")


class PosConfig(StrictModel):
    store: Path | None = Field(None, description="sales seen and unreadable receipts; default: pos.db beside "
                                                 "storage.path")
    templates: list[ReceiptTemplate] = Field(default_factory=list, description="receipt templates by name, "
                                             "for tills whose receipts the built-in zh and en ones do not read")
    attribution_window: Duration = Field(120.0, gt=0, description="a member code scanned (or a face recognised) "
                                         "at a till this long before the receipt credits the sale")
    till_cameras: dict[str, str] = Field(default_factory=dict, description="till device id -> a camera whose "
                                         "recognised members are credited (needs faces.enabled and consent "
                                         "to `points`)")

    @model_validator(mode="after")
    def _template_names_unique(self) -> "PosConfig":
        names = [t.name for t in self.templates]
        if len(set(names)) != len(names):
            raise ValueError("template names must be unique")
        return self


class AdsConfig(StrictModel):
    store: Path | None = Field(None, description="campaigns and creatives received by ads.sync; default: ads.db "
                                                 "beside storage.path")
    # Issue 6: proof of play and the screens' plans.
    plays_store: Path | None = Field(None, description="proof-of-play records posted by the players; default: "
                                     "plays.db beside storage.path")
    keep_plays: Duration = Field(30 * 86400.0, gt=3600, description="how long proof-of-play records are kept "
                                 "(and how late a backfilled play is still accepted)")
    report_partial: Duration | None = Field(900.0, ge=5, description="how often the totals of the hour in "
                                            "progress are reported (ad.played with final false); null: only "
                                            "complete hours")
    plan_window: Duration = Field(7200.0, ge=600, le=86400, description="how far ahead a screen's playlist "
                                  "reaches; re-planned when less than half of it is left")
    # Issue 6 (media): the screens' media cache.
    media_dir: Path | None = Field(None, description="where the creatives' files are cached (by sha256); "
                                   "default: media/ beside storage.path")
    media_max_bytes: ByteSize = Field(ByteSize(2 * 1024**3), ge=1024**2, description="the media cache's size; "
                                      "the least recently used files not in a current playlist are evicted")
    media_max_file_bytes: ByteSize = Field(ByteSize(512 * 1024**2), ge=1024, description="largest media file "
                                           "fetched; a larger one is refused (and retried later)")


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)") from None
    return name


class SiteConfigBase(StrictModel):
    site_id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    gateway_id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    api: ApiConfig
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    timezone: Annotated[str, AfterValidator(_time_zone)] = Field(
        "UTC", description="the site's IANA time zone: access time windows are in its local time")
    access: AccessConfig = Field(default_factory=AccessConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    points: PointsConfig = Field(default_factory=PointsConfig)
    pos: PosConfig = Field(default_factory=PosConfig)
    ads: AdsConfig = Field(default_factory=AdsConfig)
    screens: list[Screen] = Field(default_factory=list, description="the site's screens and signs")
    devices: list[DeviceConfig] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _device_ids_unique(self) -> "SiteConfigBase":
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is used twice")
            seen.add(device.id)
        kinds = {d.id: d.kind for d in self.devices}
        for door in self.access.doors:
            if door.device not in seen:
                raise ValueError(f"door {door.id}: no device {door.device!r} in devices")
            if door.camera is not None and kinds.get(door.camera) != "camera":
                raise ValueError(f"door {door.id}: camera {door.camera!r} is not a camera in devices")
            if "face" in door.methods and not self.faces.enabled:
                raise ValueError(f"door {door.id}: face is among its methods but face recognition is off "
                                 "at this site (faces.enabled: false)")
        templates = {t.name for t in self.pos.templates} | set(BUILTIN_TEMPLATES)
        for device in self.devices:
            template = getattr(device, "template", None)
            if template is not None and template not in templates:
                raise ValueError(f"device {device.id}: no receipt template {template!r} "
                                 f"(pos.templates, or the built-in {', '.join(sorted(BUILTIN_TEMPLATES))})")
        screen_ids = [screen.id for screen in self.screens]
        if len(set(screen_ids)) != len(screen_ids):
            raise ValueError("screen ids must be unique")
        door_ids = {door.id for door in self.access.doors}
        for screen in self.screens:  # issue 6: a screen's door and camera must exist
            if screen.door is not None and screen.door not in door_ids:
                raise ValueError(f"screen {screen.id}: door {screen.door!r} is not in access.doors")
            if screen.camera is not None and kinds.get(screen.camera) != "camera":
                raise ValueError(f"screen {screen.id}: camera {screen.camera!r} is not a camera in devices")
            if screen.sign is not None and kinds.get(screen.sign) != "led_sign":
                raise ValueError(f"screen {screen.id}: sign {screen.sign!r} is not an led_sign in devices")
        tokens = [s.token.get_secret_value() for s in self.screens if s.token is not None]
        if len(set(tokens)) != len(tokens) or self.api.token.get_secret_value() in tokens:
            raise ValueError("every screen needs its own token, different from api.token")
        for device in self.devices:
            if device.kind == "barcode_scanner" and not kinds.get(device.till, "").startswith("pos_"):
                raise ValueError(f"device {device.id}: its till {device.till!r} is not a pos_serial, pos_tcp or "
                                 "pos_webhook device")
        for till, camera in self.pos.till_cameras.items():
            if kinds.get(camera) != "camera":
                raise ValueError(f"pos.till_cameras: {camera!r} (for till {till}) is not a camera in devices")
            if not kinds.get(till, "").startswith("pos_"):
                raise ValueError(f"pos.till_cameras: {till!r} is not a pos_serial, pos_tcp or pos_webhook device")
            if not self.faces.enabled:
                raise ValueError("pos.till_cameras needs face recognition on at this site (faces.enabled)")
        return self

    @property
    def access_store_path(self) -> Path:
        return self.access.store or self.storage.path.parent / "access.db"

    @property
    def ads_store_path(self) -> Path:
        return self.ads.store or self.storage.path.parent / "ads.db"

    @property
    def plays_store_path(self) -> Path:
        return self.ads.plays_store or self.storage.path.parent / "plays.db"

    @property
    def ads_media_dir(self) -> Path:  # issue 6 (media)
        return self.ads.media_dir or self.storage.path.parent / "media"

    @property
    def pos_store_path(self) -> Path:
        return self.pos.store or self.storage.path.parent / "pos.db"

    @property
    def points_store_path(self) -> Path:
        return self.points.store or self.storage.path.parent / "points.db"

    @property
    def faces_store_path(self) -> Path:
        return self.faces.store or self.storage.path.parent / "faces.db"

    @property
    def faces_key_path(self) -> Path:
        return self.faces.key_file or self.faces_store_path.parent / "faces.key"

    def device(self, device_id: str) -> DeviceConfig | None:
        return next((d for d in self.devices if d.id == device_id), None)


# ------------------------------------------------------------------------- the dynamic site model


def device_kinds() -> dict[str, type[DeviceConfig]]:
    """Settings models of every registered driver kind."""
    return {kind: driver.Settings for kind, driver in registry.drivers().items()}


@lru_cache(maxsize=8)
def _site_model_for(kinds: tuple[tuple[str, type[DeviceConfig]], ...]) -> type[SiteConfigBase]:
    settings = [model for _, model in kinds]
    if not settings:
        device_type: Any = DeviceConfig
    elif len(settings) == 1:
        device_type = settings[0]
    else:
        device_type = Annotated[Union[tuple(settings)], Field(discriminator="kind")]
    return create_model("SiteConfig", __base__=SiteConfigBase, devices=(list[device_type], Field(default_factory=list)))


def site_model() -> type[SiteConfigBase]:
    return _site_model_for(tuple(sorted(device_kinds().items())))


SiteConfig = SiteConfigBase  # the type to annotate with; instances come from site_model()


def config_json_schema() -> dict[str, Any]:
    schema = site_model().model_json_schema()
    schema["title"] = "Site gateway configuration"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ----------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ConfigProblem:
    location: str  # e.g. devices[2].port
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.location or '(top level)'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


MAX_CONFIG_VALUES = 200_000  # a site config has hundreds; more means YAML aliases multiplying ("billion laughs")


class _TooLarge(Exception):
    pass


def _substitute_env(value: Any, path: tuple, problems: list[tuple[tuple, str]], env: dict[str, str],
                    budget: list[int] | None = None) -> Any:
    budget = budget if budget is not None else [MAX_CONFIG_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge()
    if isinstance(value, dict):
        return {k: _substitute_env(v, path + (k,), problems, env, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, path + (i,), problems, env, budget) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append((path, f"environment variable {name} is not set"))
        return ""

    return _ENV_REF.sub(replace, value)


def _line_numbers(text: str) -> dict[tuple, int]:
    """Map each path in the YAML document to the 1-based line where its value starts."""
    lines: dict[tuple, int] = {}
    budget = [MAX_CONFIG_VALUES]

    def walk(node: yaml.Node, path: tuple) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLarge()
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                lines[path + (key,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key,))
                lines[path + (key,)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, path + (index,))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def format_location(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _problem_from_pydantic(error: dict, kinds: set[str]) -> tuple[tuple, str]:
    loc = list(error["loc"])
    # A tagged union puts the tag into the location (devices.2.http_ingest.port): drop it.
    for i in range(len(loc) - 2):
        if loc[i] == "devices" and isinstance(loc[i + 1], int) and loc[i + 2] in kinds:
            del loc[i + 2]
            break
    message = error["msg"]
    if error["type"] == "union_tag_invalid":
        loc.append("kind")
        tag = error.get("ctx", {}).get("tag")
        message = f"unknown device kind {tag!r} (known kinds: {', '.join(sorted(kinds))})"
    elif error["type"] == "literal_error" and len(loc) == 3 and loc[0] == "devices" and loc[2] == "kind":
        message = f"unknown device kind {error.get('input')!r} (known kinds: {', '.join(sorted(kinds))})"
    elif error["type"] == "union_tag_not_found":
        loc.append("kind")
        message = "field required"
    elif error["type"] == "missing":
        message = "field required"
    elif error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling)"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    message = message[:1].lower() + message[1:]
    return tuple(loc), message


def _nearest_line(path: tuple, lines: dict[tuple, int]) -> int | None:
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]


def parse_config(text: str, source: str = "<config>", env: dict[str, str] | None = None) -> SiteConfigBase:
    """Validate YAML text; raise ConfigError with every problem found."""
    env = dict(os.environ) if env is None else env
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError(source, [ConfigProblem("", f"not valid YAML: {getattr(exc, 'problem', exc)}", line)]) from None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        # PyYAML's safe constructors let some errors escape unwrapped: `2001-02-30` (ValueError),
        # `!!int x` (ValueError), `!!timestamp x` (AttributeError), very deep nesting (RecursionError).
        raise ConfigError(source, [ConfigProblem("", f"not valid YAML: {type(exc).__name__}: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, [ConfigProblem("", "the file must be a YAML mapping (key: value lines)", 1)])

    env_problems: list[tuple[tuple, str]] = []
    try:
        lines = _line_numbers(text)
        data = _substitute_env(raw, (), env_problems, env)
    except RecursionError:  # an anchor that contains its own alias (`a: &x [*x]`) never ends
        raise ConfigError(source, [ConfigProblem("", "the YAML nests too deeply or an anchor refers to itself")]) from None
    except _TooLarge:
        raise ConfigError(source, [ConfigProblem("", f"the config expands to more than {MAX_CONFIG_VALUES} values "
                                                     "(YAML aliases repeating each other?)")]) from None
    problems = [ConfigProblem(format_location(p), m, _nearest_line(p, lines)) for p, m in env_problems]

    kinds = device_kinds()
    try:
        config = site_model().model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path, message = _problem_from_pydantic(error, set(kinds))
            problems.append(ConfigProblem(format_location(path), message, _nearest_line(path, lines)))
        config = None
    if problems:
        raise ConfigError(source, problems)
    assert config is not None
    return config


def load_config(path: str | Path, env: dict[str, str] | None = None) -> SiteConfigBase:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigProblem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read: {exc}")]) from None
    return parse_config(text, str(path), env)


def load_site_config(path: str | Path) -> SiteConfigBase | None:
    """For the command line: the site config at `path`, or None after printing why it is refused
    (on stderr)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None

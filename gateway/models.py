"""Third-party model files: which ones the gateway knows, where they live, and loading them safely.

The weights are never committed (their licenses and sizes do not belong in the repository).
`models/manifest.yaml` lists each model with its file name, sha256, source URL, license and input
spec; the files live in a models directory (`models_dir`). Before a file is handed to onnxruntime
its sha256 is checked, so a truncated download or a wrong file is reported as such, by name,
instead of surfacing later as an obscure inference error or, worse, as wrong detections.

onnxruntime is imported only when a session is opened, so that `gateway check-config` and the rest
of the command line stay quick on machines that never run a model.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .validation import StrictModel

if TYPE_CHECKING:
    import onnxruntime

MANIFEST_PATH = Path(__file__).resolve().parents[1] / "models" / "manifest.yaml"
MODELS_DIR_ENV = "GATEWAY_MODELS_DIR"
DEFAULT_MODELS_DIR = Path("var") / "models"
FETCH_TIMEOUT = 30.0  # seconds without progress before a download is given up
_CHUNK = 1024 * 1024

Task = Literal["face_detection", "person_detection", "face_embedding", "person_reid"]


# ------------------------------------------------------------------------------------------ errors


class ModelError(Exception):
    """A model cannot be used; the message says which file and what to do about it."""


class ModelMissingError(ModelError):
    pass


class ModelCorruptError(ModelError):
    pass


class ModelFetchError(ModelError):
    pass


# ---------------------------------------------------------------------------------------- manifest


class InputSpec(StrictModel):
    """How a model wants its input: ((value * scale) - mean) / std per channel, in `color` order."""

    name: str
    size: tuple[int, int] | Literal["dynamic"] = Field(..., description="[width, height], or dynamic")
    multiple_of: int = Field(1, ge=1, description="for a dynamic size: width and height must be multiples of this")
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["BGR", "RGB"]
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: Literal["letterbox", "warp"] = Field(
        ..., description="letterbox: keep the aspect ratio and pad; warp: the caller supplies an aligned crop")
    pad_value: int | None = Field(None, ge=0, le=255, description="letterbox padding (right and bottom)")
    dynamic_batch: bool = False

    @model_validator(mode="after")
    def _letterbox_has_padding(self) -> "InputSpec":
        if self.resize == "letterbox" and self.pad_value is None:
            raise ValueError("a letterboxed input needs pad_value")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not be 0")
        return self


class FamilySpec(StrictModel):
    task: Task
    description: str


class ModelSpec(StrictModel):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    task: Task
    family: str
    file: str = Field(..., pattern=r"^[^/\\]+$", description="file name inside the models directory")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(None, ge=1)
    url: str | None = Field(None, description="where `gateway models fetch` downloads it; none: copy it by hand")
    source: str
    license: str
    input: InputSpec
    outputs: list[str] = Field(default_factory=list)
    classes: str | None = None
    embedding_dim: int | None = Field(None, ge=1)
    notes: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError("url must start with https:// or http://")
        return url

    def how_to_get(self) -> str:
        """What a site engineer can do when the file is not there."""
        if self.url:
            return f"run 'gateway models fetch {self.name}' or copy it there (source: {self.url})"
        return f"copy it there (source: {self.source})"


class ModelManifest(StrictModel):
    version: Literal[1] = 1
    families: dict[str, FamilySpec]
    models: list[ModelSpec]

    @model_validator(mode="after")
    def _consistent(self) -> "ModelManifest":
        names = [m.name for m in self.models]
        for name in set(names):
            if names.count(name) > 1:
                raise ValueError(f"model {name!r} is listed twice")
        for model in self.models:
            family = self.families.get(model.family)
            if family is None:
                raise ValueError(f"model {model.name!r}: unknown family {model.family!r} "
                                 f"(known: {', '.join(sorted(self.families))})")
            if family.task != model.task:
                raise ValueError(f"model {model.name!r}: task {model.task} does not match its family's ({family.task})")
        return self

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ModelManifest":
        """The manifest at `path`, by default the repository's models/manifest.yaml."""
        path = Path(path) if path is not None else MANIFEST_PATH
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ModelError(f"cannot read the model manifest {path}: {exc}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(f"model manifest {path} is not valid:\n{exc}") from None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise ModelError(f"unknown model {name!r} (known: {', '.join(self.names)})")

    def path_of(self, name: str, models_dir: str | Path) -> Path:
        """Where the model's file is; ModelMissingError (saying how to get it) if it is not there."""
        spec = self.get(name)
        models_dir = Path(models_dir)
        path = models_dir / spec.file
        if not path.is_file():
            raise ModelMissingError(f"model file {spec.file} not found in {models_dir}: {spec.how_to_get()}")
        return path

    def verify(self, name: str, models_dir: str | Path) -> Path:
        """The model's path once its sha256 matches the manifest; ModelCorruptError if it does not."""
        spec = self.get(name)
        path = self.path_of(name, models_dir)
        actual = sha256_of(path)
        if actual != spec.sha256:
            size = path.stat().st_size
            expected_size = f" (expected {spec.size_bytes} bytes)" if spec.size_bytes else ""
            raise ModelCorruptError(
                f"model file {path} is not the expected one: sha256 {actual}, expected {spec.sha256}; "
                f"{size} bytes{expected_size}. Replace it: {spec.how_to_get()}")
        return path

    def status(self, name: str, models_dir: str | Path) -> Literal["present", "missing", "corrupt"]:
        try:
            self.verify(name, models_dir)
        except ModelMissingError:
            return "missing"
        except ModelCorruptError:
            return "corrupt"
        return "present"

    def load_model(self, name: str, models_dir: str | Path, threads: int = 1,
                   verify: bool = True) -> "onnxruntime.InferenceSession":
        path = self.verify(name, models_dir) if verify else self.path_of(name, models_dir)
        return open_session(path, threads=threads)

    def fetch(self, name: str, models_dir: str | Path, timeout: float = FETCH_TIMEOUT) -> Path:
        """Download the model into models_dir (a no-op when the right file is already there).

        The download goes to a temporary file in the same directory and is renamed into place only
        once its sha256 matches, so an interrupted or wrong download never leaves a file that looks
        like the model.
        """
        spec = self.get(name)
        models_dir = Path(models_dir)
        target = models_dir / spec.file
        if target.is_file() and sha256_of(target) == spec.sha256:
            return target
        if not spec.url:
            raise ModelFetchError(f"model {name} has no download URL: copy {spec.file} into {models_dir} "
                                  f"by hand (source: {spec.source})")
        try:
            models_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.file}.", suffix=".part", dir=models_dir)
        except OSError as exc:
            raise ModelFetchError(f"cannot write into the models directory {models_dir}: {exc}") from None
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout) as response:
                    received = 0
                    while chunk := response.read(_CHUNK):
                        received += len(chunk)
                        if spec.size_bytes is not None and received > spec.size_bytes:
                            # Cannot be the file any more; stop before a wrong URL fills the disk.
                            raise ModelFetchError(f"downloading {spec.file} from {spec.url}: more than the "
                                                  f"expected {spec.size_bytes} bytes, not the model; copy the "
                                                  f"file into {models_dir} by hand")
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                # HTTPError says "HTTP Error 404: Not Found"; other URLErrors keep the cause in .reason.
                reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
                raise ModelFetchError(f"cannot download {spec.file} from {spec.url}: {reason}; "
                                      f"copy the file there by hand ({models_dir})") from None
            actual = digest.hexdigest()
            if actual != spec.sha256:
                raise ModelFetchError(f"downloaded {spec.file} from {spec.url} but its sha256 is {actual}, "
                                      f"expected {spec.sha256}; not installed. Copy the right file into "
                                      f"{models_dir} by hand")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


@lru_cache(maxsize=1)
def default_manifest() -> ModelManifest:
    """The repository's manifest, read once."""
    return ModelManifest.load()


# ------------------------------------------------------------------------------- files and sessions


def models_dir(configured: str | Path | None = None) -> Path:
    """The models directory: the configured value, else $GATEWAY_MODELS_DIR, else var/models."""
    if configured is not None and str(configured) != "":
        return Path(configured).expanduser()
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_MODELS_DIR


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (models can be tens of megabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_session(path: str | Path, threads: int = 1, *, data: bytes | None = None,
                 name: str | None = None) -> "onnxruntime.InferenceSession":
    """An onnxruntime CPU session that uses `threads` threads and nothing more.

    One intra-op pool of `threads` and sequential execution keep the gateway's CPU use predictable
    (several cameras share one small machine). A file onnxruntime cannot parse raises
    ModelCorruptError with onnxruntime's one-line reason, not its stack. With `data`, the model is
    those bytes (already read and checked) and `name` says what it is in errors.
    """
    import onnxruntime

    path = Path(path)
    if data is None and not path.is_file():
        raise ModelMissingError(f"model file {path.name} not found in {path.parent}")
    what = name if data is not None and name else f"model file {path.name} in {path.parent}"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise in the site log
    try:
        return onnxruntime.InferenceSession(str(path) if data is None else data, sess_options=options,
                                            providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind classes (Fail, InvalidProtobuf, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelCorruptError(f"{what} cannot be loaded by onnxruntime "
                                f"(truncated or not an ONNX model?): {reason}") from None


# ------------------------------------------------------------- the repository manifest, shortly


def path_of(name: str, models_dir: str | Path) -> Path:
    return default_manifest().path_of(name, models_dir)


def verify(name: str, models_dir: str | Path) -> Path:
    return default_manifest().verify(name, models_dir)


def load_model(name: str, models_dir: str | Path, threads: int = 1,
               verify: bool = True) -> "onnxruntime.InferenceSession":
    return default_manifest().load_model(name, models_dir, threads=threads, verify=verify)


def fetch(name: str, models_dir: str | Path, timeout: float = FETCH_TIMEOUT) -> Path:
    return default_manifest().fetch(name, models_dir, timeout=timeout)

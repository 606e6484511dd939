"""The ad scorer: how likely a creative is to be watched if it plays on a screen now.

A small model the project trains itself (`models/train_ad_scorer.py`, in a documented synthetic
world) and ships in the repository (`models/ad_scorer.onnx`, a few KB: our own weights, unlike the
third-party models of `models/manifest.yaml`). It is one hidden layer in ONNX, run with onnxruntime
like every other model of the gateway. The play planner asks `ScorerHolder.rank` for one score per
candidate creative; `None` means "no usable model" and the planner falls back to weighted share of
voice. A new model arrives as a file or bytes with its sha256 (`ScorerHolder.swap`): it is checked
and loaded in the calling thread, and only a model that passed replaces the current one.

Features
--------
One row of `FEATURE_COUNT` float32 per (moment, screen, candidate creative), in this order
(`FEATURE_NAMES`):

====  ====================  ====================================================================
 0    hour_sin              sin(2π·h/24), h = the moment's local hour of day with minutes (0..24)
 1    hour_cos              cos(2π·h/24)
 2    hour_sin2             sin(4π·h/24): the second harmonic, so that a small model can tell
 3    hour_cos2             cos(4π·h/24)   lunch and dinner peaks from the afternoon between them
 4-10 weekday_mon..sun      one-hot of the moment's weekday (Monday first)
11    audience_log1p        log1p(faces watching the screen now)
12    dwell_log1p           log1p(mean dwell seconds of those faces, capped at 600 s)
13    tier_standard_log1p   log1p(standard members among them)
14    tier_silver_log1p     log1p(silver members)
15    tier_gold_log1p       log1p(gold members)
16    crowd_level           crowd around the screen: low 0, medium 0.5, high 1 (unknown: 0.5)
17    plays_last_hour_log1p log1p(plays of this creative on this screen in the last hour)
18    since_last_play       seconds since it last played on this screen / 3600, capped at 1
                            (never played, or None: 1)
19-24 category_*            one-hot: food, fashion, jewellery, electronics, services, other
                            (a category outside the vocabulary counts as other; case-insensitive)
25-28 type_*                one-hot creative type: image, video, web, text (anything else: all 0)
29    duration_min          the creative's duration in minutes, capped at 2
====  ====================  ====================================================================

The moment is the site's local time (the hour and weekday are read from the datetime as given; an
aware datetime should already be in the site's time zone). Counts below zero count as zero; a
non-finite number raises ValueError (and `rank` answers None).

The model's input is "features" float32 [N, FEATURE_COUNT], its output "score" float32 [N, 1] in
0..1 (the probability that the play gets attention in the training world). The feature names are
stored in the model's metadata ("features"); a model trained on another layout is refused at load.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models import ModelCorruptError, ModelError, ModelMissingError, open_session

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "score"
CATEGORIES = ("food", "fashion", "jewellery", "electronics", "services", "other")
CREATIVE_TYPES = ("image", "video", "web", "text")
TIERS = ("standard", "silver", "gold")
CROWD_LEVELS = {"low": 0.0, "medium": 0.5, "high": 1.0}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DWELL_CAP_S = 600.0
SINCE_CAP_S = 3600.0
DURATION_CAP_S = 120.0

FEATURE_NAMES: tuple[str, ...] = (
    "hour_sin", "hour_cos", "hour_sin2", "hour_cos2",
    *(f"weekday_{d}" for d in WEEKDAYS),
    "audience_log1p", "dwell_log1p",
    *(f"tier_{t}_log1p" for t in TIERS),
    "crowd_level",
    "plays_last_hour_log1p", "since_last_play",
    *(f"category_{c}" for c in CATEGORIES),
    *(f"type_{t}" for t in CREATIVE_TYPES),
    "duration_min",
)
FEATURE_COUNT = len(FEATURE_NAMES)
FEATURES_METADATA_KEY = "features"
_HOUR = slice(0, 4)
_WEEKDAY = FEATURE_NAMES.index("weekday_mon")
_AUDIENCE = FEATURE_NAMES.index("audience_log1p")
_DWELL = FEATURE_NAMES.index("dwell_log1p")
_TIER = FEATURE_NAMES.index("tier_standard_log1p")
_CROWD = FEATURE_NAMES.index("crowd_level")
_PLAYS = FEATURE_NAMES.index("plays_last_hour_log1p")
_SINCE = FEATURE_NAMES.index("since_last_play")
_CATEGORY = FEATURE_NAMES.index("category_food")
_TYPE = FEATURE_NAMES.index("type_image")
_DURATION = FEATURE_NAMES.index("duration_min")

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "ad_scorer.onnx"


# ------------------------------------------------------------------------------------ features


@dataclass(frozen=True)
class ScoringContext:
    """The moment and what a screen sees then."""

    moment: datetime
    audience: int = 0  # faces watching the screen now
    dwell_s: float = 0.0  # their mean dwell, seconds
    tiers: Mapping[str, int] = field(default_factory=dict)  # member tier -> count among them
    crowd: str = "medium"  # low / medium / high


@dataclass(frozen=True)
class CandidateInfo:
    """One creative the planner could play next on the screen."""

    creative_id: str
    campaign_id: str
    category: str  # food / fashion / jewellery / electronics / services / other
    type: str  # image / video / web / text
    duration: float  # seconds
    plays_last_hour: int = 0  # on this screen
    seconds_since_last_play: float | None = None  # on this screen; None: never (or long ago)


@dataclass(frozen=True)
class ScreenState:
    """What `ScorerHolder.rank` needs to know about a screen (any object with these attributes will do)."""

    screen_id: str
    audience: int = 0
    dwell_s: float = 0.0
    tiers: Mapping[str, int] = field(default_factory=dict)
    crowd: str = "medium"


def _number(value: Any, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


def _count_log1p(value: Any, what: str) -> float:
    return math.log1p(max(0.0, _number(value, what)))


def feature_vector(context: ScoringContext, candidate: CandidateInfo) -> np.ndarray:
    """The FEATURE_COUNT float32 features of one candidate at one moment on one screen (see the module doc)."""
    row = np.zeros(FEATURE_COUNT, np.float32)
    moment = context.moment
    angle = 2.0 * math.pi * (moment.hour + moment.minute / 60.0 + moment.second / 3600.0) / 24.0
    row[_HOUR] = (math.sin(angle), math.cos(angle), math.sin(2.0 * angle), math.cos(2.0 * angle))
    row[_WEEKDAY + moment.weekday()] = 1.0
    row[_AUDIENCE] = _count_log1p(context.audience, "audience")
    row[_DWELL] = math.log1p(min(DWELL_CAP_S, max(0.0, _number(context.dwell_s, "dwell_s"))))
    tiers = {str(k).lower(): v for k, v in (context.tiers or {}).items()}
    for i, tier in enumerate(TIERS):
        row[_TIER + i] = _count_log1p(tiers.get(tier, 0), f"tiers[{tier}]")
    row[_CROWD] = CROWD_LEVELS.get(str(context.crowd).lower(), CROWD_LEVELS["medium"])
    row[_PLAYS] = _count_log1p(candidate.plays_last_hour, "plays_last_hour")
    since = candidate.seconds_since_last_play
    row[_SINCE] = (1.0 if since is None
                   else min(SINCE_CAP_S, max(0.0, _number(since, "seconds_since_last_play"))) / SINCE_CAP_S)
    category = str(candidate.category).lower()
    row[_CATEGORY + CATEGORIES.index(category if category in CATEGORIES else "other")] = 1.0
    kind = str(candidate.type).lower()
    if kind in CREATIVE_TYPES:
        row[_TYPE + CREATIVE_TYPES.index(kind)] = 1.0
    row[_DURATION] = min(DURATION_CAP_S, max(0.0, _number(candidate.duration, "duration"))) / 60.0
    return row


def feature_matrix(context: ScoringContext, candidates: Sequence[CandidateInfo]) -> np.ndarray:
    """[len(candidates), FEATURE_COUNT] float32: one feature_vector per candidate."""
    if not candidates:
        return np.zeros((0, FEATURE_COUNT), np.float32)
    return np.stack([feature_vector(context, c) for c in candidates])


# ---------------------------------------------------------------------------------------- model


class AdScorer:
    """An onnxruntime session of an ad scorer model whose input and output were checked at load."""

    def __init__(self, session: "onnxruntime.InferenceSession", name: str):
        self._session = session
        self.name = name
        self._lock = threading.Lock()  # one run at a time: the session has one intra-op pool
        self._check()

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None, threads: int = 1) -> "AdScorer":
        """The scorer in the file at `path` (its sha256 checked first when given); ModelError naming the file."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelMissingError(f"ad scorer model file {path} not found") from None
        except OSError as exc:
            raise ModelError(f"cannot read the ad scorer model file {path}: {exc.strerror or exc}") from None
        return cls.from_bytes(data, name=str(path), sha256=sha256, threads=threads)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "(bytes)", sha256: str | None = None,
                   threads: int = 1) -> "AdScorer":
        if sha256 is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != str(sha256).strip().lower():
                raise ModelCorruptError(f"ad scorer model {name} is not the expected one: sha256 {actual}, "
                                        f"expected {sha256}; {len(data)} bytes")
        return cls(open_session(name, threads, data=bytes(data), name=f"ad scorer model {name}"), name)

    def _check(self) -> None:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        where = f"ad scorer model {self.name}"
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ModelCorruptError(f"{where} has inputs {[i.name for i in inputs]}, expected one named "
                                    f"{INPUT_NAME!r}: not an ad scorer")
        spec = inputs[0]
        if spec.type != "tensor(float)":
            raise ModelCorruptError(f"{where}: input {INPUT_NAME!r} is {spec.type}, expected tensor(float)")
        shape = list(spec.shape or [])
        if len(shape) != 2 or shape[1] != FEATURE_COUNT:
            raise ModelCorruptError(f"{where}: input {INPUT_NAME!r} has shape {shape}, expected "
                                    f"[N, {FEATURE_COUNT}] (this gateway's {FEATURE_COUNT} features)")
        if OUTPUT_NAME not in [o.name for o in outputs]:
            raise ModelCorruptError(f"{where} has outputs {[o.name for o in outputs]}, expected {OUTPUT_NAME!r}")
        metadata = self._session.get_modelmeta().custom_metadata_map or {}
        trained_on = metadata.get(FEATURES_METADATA_KEY)
        if trained_on is not None and trained_on.split(",") != list(FEATURE_NAMES):
            raise ModelCorruptError(f"{where} was trained on other features ({trained_on}); this gateway "
                                    f"computes {','.join(FEATURE_NAMES)}")
        probe = self._run(np.zeros((2, FEATURE_COUNT), np.float32))  # the output's shape, for real
        if probe.shape != (2,) or not np.all(np.isfinite(probe)):
            raise ModelCorruptError(f"{where} does not give one finite score per row")

    def _run(self, features: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self._session.run([OUTPUT_NAME], {INPUT_NAME: features})[0]
        out = np.asarray(out, np.float32)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """One score per row of a [N, FEATURE_COUNT] matrix."""
        features = np.ascontiguousarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != FEATURE_COUNT:
            raise ValueError(f"features must be [N, {FEATURE_COUNT}], not {list(features.shape)}")
        if not len(features):
            return np.zeros(0, np.float32)
        scores = self._run(features)
        if scores.shape != (len(features),) or not np.all(np.isfinite(scores)):
            raise ModelError(f"ad scorer model {self.name} gave {list(scores.shape)} scores for {len(features)} "
                             f"rows (or non-finite ones)")
        return scores

    def score(self, context: ScoringContext, candidates: Sequence[CandidateInfo]) -> np.ndarray:
        """float32 [len(candidates)]: each candidate's score (0..1, higher: more attention expected)."""
        return self.score_features(feature_matrix(context, candidates))


def load_shipped(threads: int = 1) -> AdScorer:
    """The scorer committed in the repository (models/ad_scorer.onnx)."""
    return AdScorer.load(SHIPPED_MODEL, threads=threads)


class ScorerHolder:
    """The current scorer, if any; `swap` replaces it only with a model that checked and loaded."""

    def __init__(self, scorer: AdScorer | None = None):
        self._scorer = scorer
        self.last_error: str | None = None

    @property
    def scorer(self) -> AdScorer | None:
        return self._scorer

    def swap(self, model: str | Path | bytes, sha256: str, threads: int = 1) -> AdScorer:
        """Check `model` (a file path or the model's bytes) against `sha256`, load it, then make it current.

        Runs in the calling thread (keep it off the event loop). Raises ModelError, and keeps the
        current scorer, when the file is missing, the sha256 differs or the model is not a usable
        ad scorer.
        """
        if isinstance(model, (bytes, bytearray, memoryview)):
            scorer = AdScorer.from_bytes(bytes(model), sha256=sha256, threads=threads)
        else:
            scorer = AdScorer.load(model, sha256=sha256, threads=threads)
        self._scorer = scorer  # one reference assignment: rank() sees the old model or the new one
        return scorer

    def clear(self) -> None:
        """No model any more: rank() answers None until the next swap."""
        self._scorer = None

    def rank(self, moment: datetime, screen: Any, candidates: Sequence[CandidateInfo]) -> list[float] | None:
        """One score per candidate, or None when there is no model or scoring fails. Never raises.

        `screen` is a ScreenState or any object with `audience`, `dwell_s`, `tiers` and `crowd`.
        """
        scorer = self._scorer
        if scorer is None:
            return None
        try:
            context = ScoringContext(moment=moment, audience=screen.audience, dwell_s=screen.dwell_s,
                                     tiers=screen.tiers, crowd=screen.crowd)
            return [float(s) for s in scorer.score(context, list(candidates))]
        except Exception as exc:  # the planner must keep playing: share of voice instead
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.warning("ad scorer %s failed, falling back to share of voice: %s", scorer.name, message)
            self.last_error = message
            return None

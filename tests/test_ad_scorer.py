"""The ad scorer: features, the committed model, its training script, safe loading and swapping."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gateway.ads.scorer import (
    CATEGORIES,
    FEATURE_COUNT,
    FEATURE_NAMES,
    SHIPPED_MODEL,
    AdScorer,
    CandidateInfo,
    ScorerHolder,
    ScoringContext,
    ScreenState,
    feature_vector,
    load_shipped,
)
from gateway.models import ModelCorruptError, ModelError, ModelMissingError

ROOT = Path(__file__).resolve().parents[1]
WEDNESDAY = datetime(2026, 5, 13)
SATURDAY = datetime(2026, 5, 16)


def trainer():
    """models/train_ad_scorer.py as a module (it is a script, not part of the package)."""
    name = "train_ad_scorer"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "models" / "train_ad_scorer.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def context(hour: int = 15, day: datetime = WEDNESDAY, **changes) -> ScoringContext:
    values = {"moment": day.replace(hour=hour), "audience": 4, "dwell_s": 8.0, "tiers": {"standard": 1}, "crowd": "medium"}
    values.update(changes)
    return ScoringContext(**values)


def creative(category: str = "fashion", kind: str = "image", duration: float = 15, plays: int = 0,
             since: float | None = None) -> CandidateInfo:
    return CandidateInfo(creative_id=f"{category}-{kind}", campaign_id="camp-1", category=category, type=kind,
                         duration=duration, plays_last_hour=plays, seconds_since_last_play=since)


def tiny_model(input_name: str = "features", width: int = FEATURE_COUNT, dtype=TensorProto.FLOAT,
               features: str | None = None) -> bytes:
    """A one-layer logistic model with the given input; ir 8, opset 13 like the real one."""
    np_dtype = np.float32 if dtype == TensorProto.FLOAT else np.float64
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "w"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["score"])],
        "tiny",
        [helper.make_tensor_value_info(input_name, dtype, ["N", width])],
        [helper.make_tensor_value_info("score", dtype, ["N", 1])],
        [numpy_helper.from_array(np.full((width, 1), 0.1, np_dtype), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    if features is not None:
        helper.set_model_props(model, {"features": features})
    return model.SerializeToString()


@pytest.fixture(scope="module")
def shipped() -> AdScorer:
    return load_shipped()


# ------------------------------------------------------------------------------------ features


def test_feature_vector_layout():
    row = feature_vector(context(hour=18, day=SATURDAY, audience=3, dwell_s=5000, crowd="HIGH",
                                 tiers={"gold": 2, "Silver": 1}),
                         creative("Jewellery", "video", duration=600, plays=2, since=7200))
    assert row.dtype == np.float32 and row.shape == (FEATURE_COUNT,) == (len(FEATURE_NAMES),)
    named = dict(zip(FEATURE_NAMES, row.tolist()))
    assert named["hour_sin"] == pytest.approx(-1.0, abs=1e-6) and named["hour_cos"] == pytest.approx(0, abs=1e-6)
    assert named["hour_cos2"] == pytest.approx(-1.0, abs=1e-6)
    assert [named[f"weekday_{d}"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")] == [0, 0, 0, 0, 0, 1, 0]
    assert named["audience_log1p"] == pytest.approx(np.log1p(3))
    assert named["dwell_log1p"] == pytest.approx(np.log1p(600))  # capped
    assert named["tier_gold_log1p"] == pytest.approx(np.log1p(2))
    assert named["tier_silver_log1p"] == pytest.approx(np.log1p(1)) and named["tier_standard_log1p"] == 0
    assert named["crowd_level"] == 1.0
    assert named["plays_last_hour_log1p"] == pytest.approx(np.log1p(2))
    assert named["since_last_play"] == 1.0  # capped at an hour
    assert [named[f"category_{c}"] for c in CATEGORIES] == [0, 0, 1, 0, 0, 0]
    assert [named[f"type_{t}"] for t in ("image", "video", "web", "text")] == [0, 1, 0, 0]
    assert named["duration_min"] == 2.0  # capped at 120 s


def test_feature_vector_defaults_and_unknowns():
    row = dict(zip(FEATURE_NAMES, feature_vector(
        ScoringContext(moment=WEDNESDAY.replace(hour=12), audience=-2, dwell_s=0, tiers={}, crowd="whatever"),
        creative("pets", "hologram", duration=30, since=None)).tolist()))
    assert row["category_other"] == 1.0 and sum(row[f"category_{c}"] for c in CATEGORIES) == 1.0
    assert row["type_image"] == row["type_video"] == row["type_web"] == row["type_text"] == 0.0
    assert row["since_last_play"] == 1.0  # never played
    assert row["audience_log1p"] == 0.0 and row["crowd_level"] == 0.5
    recent = feature_vector(context(), creative(since=900))
    assert recent[FEATURE_NAMES.index("since_last_play")] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="audience"):
        feature_vector(context(audience=float("nan")), creative())


# ---------------------------------------------------------------------------- the committed model


def test_the_committed_model_loads_scores_and_is_small(shipped):
    assert SHIPPED_MODEL == ROOT / "models" / "ad_scorer.onnx"
    assert SHIPPED_MODEL.stat().st_size < 8192
    candidates = [creative(c) for c in CATEGORIES]
    scores = shipped.score(context(), candidates)
    assert scores.dtype == np.float32 and scores.shape == (len(CATEGORIES),)
    assert np.all((scores > 0) & (scores < 1))
    assert shipped.score(context(), []).shape == (0,)
    meta = onnx.load(SHIPPED_MODEL).metadata_props
    props = {p.key: p.value for p in meta}
    assert props["features"].split(",") == list(FEATURE_NAMES)
    assert float(props["held_out_auc"]) > float(props["baseline_auc"]) + 0.1


def test_the_committed_model_reflects_its_training_world(shipped):
    def one(ctx, cand) -> float:
        return float(shipped.score(ctx, [cand])[0])

    food = creative("food", "video", duration=30)
    assert one(context(hour=12), food) > one(context(hour=16), food)  # lunch
    assert one(context(hour=19), food) > one(context(hour=16), food)  # dinner
    jewellery = creative("jewellery")
    assert one(context(tiers={"gold": 1}), jewellery) > one(context(tiers={"standard": 1}), jewellery)
    fresh = one(context(), creative())
    again = one(context(), creative(plays=1, since=1800))
    just_now = one(context(), creative(plays=3, since=60))
    assert fresh > again > just_now  # repetition lowers attention
    assert one(context(audience=6), jewellery) > one(context(audience=0, dwell_s=0, tiers={}), jewellery)
    assert one(context(day=SATURDAY), creative("fashion")) > one(context(day=WEDNESDAY), creative("fashion"))
    assert one(context(), creative(kind="video")) > one(context(), creative(kind="text"))


# ---------------------------------------------------------------------------------- training


def test_training_is_deterministic_and_beats_the_context_free_baseline(tmp_path, capsys):
    train = trainer()
    args = ["--samples", "3000", "--epochs", "12", "--seed", "11"]
    assert train.main([*args, "--out", str(tmp_path / "a.onnx")]) == 0
    assert train.main([*args, "--out", str(tmp_path / "b.onnx")]) == 0
    first, second = (tmp_path / "a.onnx").read_bytes(), (tmp_path / "b.onnx").read_bytes()
    assert first == second
    assert f"sha256 {hashlib.sha256(first).hexdigest()}" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load_from_string(first).metadata_props}
    assert float(props["held_out_auc"]) > float(props["baseline_auc"]) + 0.05
    model = onnx.load_from_string(first)
    assert model.ir_version == 8 and model.opset_import[0].version == 13
    scorer = AdScorer.load(tmp_path / "a.onnx", sha256=hashlib.sha256(first).hexdigest())
    assert scorer.score(context(), [creative()]).shape == (1,)
    assert train.main([*args[:-1], "12", "--out", str(tmp_path / "c.onnx")]) == 0
    assert (tmp_path / "c.onnx").read_bytes() != first  # the seed matters


def test_world_auc_helper_matches_definition():
    train = trainer()
    y = np.array([0, 0, 1, 1, 0, 1], float)
    assert train.auc(y, np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])) == 1.0
    assert train.auc(y, np.full(6, 0.5)) == 0.5
    assert train.auc(y, np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3])) == 0.0


# ------------------------------------------------------------------------------ bad models


def test_missing_and_garbage_files_are_model_errors_naming_the_file(tmp_path):
    with pytest.raises(ModelMissingError, match="nothing.onnx"):
        AdScorer.load(tmp_path / "nothing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(1).bytes(3000))
    with pytest.raises(ModelCorruptError, match="garbage.onnx"):
        AdScorer.load(garbage)
    good = SHIPPED_MODEL.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError, match="truncated.onnx"):
        AdScorer.load(truncated)
    with pytest.raises(ModelCorruptError, match="sha256"):
        AdScorer.load(SHIPPED_MODEL, sha256="0" * 64)


@pytest.mark.parametrize("model, reason", [
    ({"width": FEATURE_COUNT - 3}, r"shape \['N', 27\], expected \[N, 30\]"),
    ({"input_name": "x"}, r"inputs \['x'\], expected one named 'features'"),
    ({"dtype": TensorProto.DOUBLE}, r"tensor\(double\), expected tensor\(float\)"),
    ({"features": "a,b,c"}, r"trained on other features"),
])
def test_a_model_of_another_shape_is_refused_at_load(tmp_path, model, reason):
    path = tmp_path / "other.onnx"
    path.write_bytes(tiny_model(**model))
    with pytest.raises(ModelCorruptError, match=reason) as err:
        AdScorer.load(path)
    assert "other.onnx" in str(err.value)


def test_a_model_of_the_right_shape_from_elsewhere_loads():
    scorer = AdScorer.from_bytes(tiny_model(features=",".join(FEATURE_NAMES)), name="tiny")
    assert scorer.score(context(), [creative(), creative("food")]).shape == (2,)


# ---------------------------------------------------------------------------- holder and swap


def test_swap_replaces_only_with_a_checked_model(tmp_path, shipped):
    holder = ScorerHolder(shipped)
    garbage = b"\x08\x07not an onnx model at all"
    with pytest.raises(ModelCorruptError):
        holder.swap(garbage, hashlib.sha256(garbage).hexdigest())
    assert holder.scorer is shipped
    narrow = tiny_model(width=12)
    with pytest.raises(ModelCorruptError, match="shape"):
        holder.swap(narrow, hashlib.sha256(narrow).hexdigest())
    assert holder.scorer is shipped
    renamed = tmp_path / "renamed.onnx"
    renamed.write_bytes(tiny_model(input_name="input"))
    with pytest.raises(ModelCorruptError, match="renamed.onnx"):
        holder.swap(renamed, hashlib.sha256(renamed.read_bytes()).hexdigest())
    assert holder.scorer is shipped
    other = tiny_model()
    with pytest.raises(ModelCorruptError, match="sha256"):
        holder.swap(other, hashlib.sha256(b"something else").hexdigest())
    assert holder.scorer is shipped
    with pytest.raises(ModelMissingError):
        holder.swap(tmp_path / "absent.onnx", "0" * 64)
    assert holder.scorer is shipped

    new = holder.swap(other, hashlib.sha256(other).hexdigest())
    assert holder.scorer is new and new is not shipped
    again = holder.swap(SHIPPED_MODEL, hashlib.sha256(SHIPPED_MODEL.read_bytes()).hexdigest().upper())
    assert holder.scorer is again
    screen = ScreenState("screen-1", audience=4, dwell_s=8.0, tiers={"standard": 1}, crowd="medium")
    moment = WEDNESDAY.replace(hour=15)
    assert holder.rank(moment, screen, [creative()]) == pytest.approx(
        shipped.score(context(), [creative()]).tolist())


def test_rank_is_none_without_a_model_or_when_scoring_fails(shipped):
    screen = ScreenState("screen-1", audience=2, dwell_s=4.0, tiers={}, crowd="low")
    moment = WEDNESDAY.replace(hour=12)
    candidates = [creative("food"), creative("services", "text", 8)]
    empty = ScorerHolder()
    assert empty.scorer is None and empty.rank(moment, screen, candidates) is None

    holder = ScorerHolder(shipped)
    ranked = holder.rank(moment, screen, candidates)
    assert isinstance(ranked, list) and len(ranked) == 2 and all(isinstance(s, float) for s in ranked)
    assert holder.rank(moment, screen, []) == []
    assert holder.rank(moment, object(), candidates) is None  # not a screen
    assert holder.rank(moment, ScreenState("s", audience=float("inf")), candidates) is None
    assert "audience" in holder.last_error

    class Broken:
        def run(self, *args, **kwargs):
            raise RuntimeError("onnxruntime fell over")

    broken = AdScorer.from_bytes(SHIPPED_MODEL.read_bytes(), name="broken")
    broken._session = Broken()
    holder = ScorerHolder(broken)
    assert holder.rank(moment, screen, candidates) is None
    assert "onnxruntime fell over" in holder.last_error
    holder.swap(SHIPPED_MODEL.read_bytes(), hashlib.sha256(SHIPPED_MODEL.read_bytes()).hexdigest())
    assert holder.rank(moment, screen, candidates) == pytest.approx(ranked)
    holder.clear()
    assert holder.rank(moment, screen, candidates) is None


def test_rank_while_models_are_swapped_always_answers(shipped):
    holder = ScorerHolder(shipped)
    models = [SHIPPED_MODEL.read_bytes(), tiny_model()]
    screen = ScreenState("screen-1", audience=3)
    moment = SATURDAY.replace(hour=19)
    answers: list = []
    stop = threading.Event()

    def planner():
        while not stop.is_set():
            answers.append(holder.rank(moment, screen, [creative(), creative("food")]))

    thread = threading.Thread(target=planner)
    thread.start()
    try:
        for i in range(20):
            data = models[i % 2]
            holder.swap(data, hashlib.sha256(data).hexdigest())
    finally:
        stop.set()
        thread.join()
    assert answers and all(a is not None and len(a) == 2 for a in answers)

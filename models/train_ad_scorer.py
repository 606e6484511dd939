"""Train the ad scorer in a synthetic world and write it as ONNX (models/ad_scorer.onnx).

    .venv/bin/python models/train_ad_scorer.py                 # the committed model
    .venv/bin/python models/train_ad_scorer.py --samples 5000 --out /tmp/s.onnx

The same arguments give the same bytes (seeded numpy, plain arithmetic, no timestamps in the file).

The synthetic world
-------------------
Each sample is one play of one creative on one screen of a mall open 10:00-22:00, on a weekday
drawn uniformly, and its label is whether the play got attention (someone watched it long enough).
The world's probability of attention is sigmoid(z) with:

- the audience: z += 1.1·log1p(faces watching) and -2.5 with nobody there; longer dwell helps a
  little (+0.4·(log1p(dwell) - 2)); a high crowd around the screen -0.4, medium -0.1 (people
  rushing by look less);
- food: +1.6·meal(h) - 0.4, meal(h) a bump of width ~1.2 h around 12:30 and 18:30 (lunch, dinner);
- fashion: +0.7 at weekends, +0.4·afternoon(h) (a bump around 16:00), -0.2;
- jewellery: +1.5 with a gold member watching, +0.5 with a silver one, -0.6;
- electronics: +0.6 in the evening (18:00 on), +0.3 at weekends, -0.2;
- services: +0.6 on weekday mornings (before 13:00), -0.3; other: -0.2;
- type: video +0.4, image 0, web -0.3, text -0.5; duration: -0.35·|ln(duration / 15 s)|;
- repetition: -0.4 per play of the creative on that screen in the last hour, and
  -1.0·exp(-seconds since its last play / 900) (just seen: ignored);
- base -1.6.

Contexts follow the mall's day: audiences are Poisson around a mean that peaks at lunch and in the
evening and is higher at weekends; each face is a recognised member with probability 0.35 (tiers
standard/silver/gold 65/25/10 %); the crowd level follows how busy the hour is. Creatives are
drawn over the six categories and four types with typical durations, with Poisson plays in the
last hour.

The model: one hidden layer of tanh units over the standardised features, a sigmoid output,
trained by plain mini-batch gradient descent with momentum on the log-loss (a little L2), the
standardisation folded into the first layer at export. Quality is measured on held-out samples
against a baseline that ignores the context (each category x type's attention rate in the training
samples: what a planner knows without the scorer) and against the world's own probabilities (the
best any model could do).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

try:
    from gateway.ads.scorer import (CATEGORIES, CREATIVE_TYPES, FEATURE_COUNT, FEATURE_NAMES,
                                    FEATURES_METADATA_KEY, INPUT_NAME, OUTPUT_NAME, CandidateInfo,
                                    ScoringContext, feature_vector)
except ImportError:  # run from a checkout without the project installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gateway.ads.scorer import (CATEGORIES, CREATIVE_TYPES, FEATURE_COUNT, FEATURE_NAMES,
                                    FEATURES_METADATA_KEY, INPUT_NAME, OUTPUT_NAME, CandidateInfo,
                                    ScoringContext, feature_vector)

DEFAULT_OUT = Path(__file__).resolve().parent / "ad_scorer.onnx"
DEFAULT_SAMPLES = 80_000
DEFAULT_SEED = 6
DEFAULT_EPOCHS = 40
DEFAULT_HIDDEN = 12
HELD_OUT = 0.25
BATCH = 256
LEARNING_RATE = 0.3
MOMENTUM = 0.9
L2 = 1e-4
ONNX_IR_VERSION = 8
ONNX_OPSET = 13
MONDAY = datetime(2026, 3, 2)  # any Monday: the moments of the world are in its week

TIER_SHARE = (0.65, 0.25, 0.10)  # standard, silver, gold among recognised members
MEMBER_SHARE = 0.35
CATEGORY_SHARE = (0.25, 0.22, 0.12, 0.16, 0.10, 0.15)  # in CATEGORIES' order
TYPE_SHARE = (0.40, 0.35, 0.10, 0.15)  # in CREATIVE_TYPES' order
TYPE_DURATIONS = {"image": (10, 15), "video": (15, 30, 60), "web": (20, 30), "text": (8, 10)}


# -------------------------------------------------------------------------------------- the world


def _bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-((hour - centre) / width) ** 2)


def meal(hour: np.ndarray) -> np.ndarray:
    return np.maximum(_bump(hour, 12.5, 1.2), _bump(hour, 18.5, 1.2))


def busy(hour: np.ndarray) -> np.ndarray:
    """0..1: how busy the mall is at that hour (lunch and evening peaks)."""
    return np.clip(0.25 + 0.55 * _bump(hour, 13.0, 1.8) + 0.7 * _bump(hour, 19.0, 2.0), 0.0, 1.0)


@dataclass
class World:
    """Plays as columns (raw values), their true probability of attention and the sampled label."""

    hour: np.ndarray
    weekday: np.ndarray
    audience: np.ndarray
    dwell: np.ndarray
    tiers: np.ndarray  # [n, 3] standard, silver, gold
    crowd: np.ndarray  # 0 low, 1 medium, 2 high
    category: np.ndarray  # index into CATEGORIES
    kind: np.ndarray  # index into CREATIVE_TYPES
    duration: np.ndarray
    plays: np.ndarray
    since: np.ndarray  # seconds; nan: never played
    probability: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


def attention_logit(w: World) -> np.ndarray:
    """The world's log-odds of attention for each play (the module doc, in numbers)."""
    cat = np.asarray(CATEGORIES)[w.category]
    kind = np.asarray(CREATIVE_TYPES)[w.kind]
    weekend = (w.weekday >= 5).astype(float)
    z = np.full(len(w.hour), -1.6)
    z += 1.1 * np.log1p(w.audience) - 2.5 * (w.audience == 0)
    z += np.where(w.audience > 0, 0.4 * (np.log1p(w.dwell) - 2.0), 0.0)
    z += np.select([w.crowd == 2, w.crowd == 1], [-0.4, -0.1], 0.0)
    z += np.where(cat == "food", 1.6 * meal(w.hour) - 0.4, 0.0)
    z += np.where(cat == "fashion", 0.7 * weekend + 0.4 * _bump(w.hour, 16.0, 1.5) - 0.2, 0.0)
    z += np.where(cat == "jewellery", 1.5 * (w.tiers[:, 2] > 0) + 0.5 * (w.tiers[:, 1] > 0) - 0.6, 0.0)
    z += np.where(cat == "electronics", 0.6 * (w.hour >= 18) + 0.3 * weekend - 0.2, 0.0)
    z += np.where(cat == "services", 0.6 * ((weekend == 0) & (w.hour < 13)) - 0.3, 0.0)
    z += np.where(cat == "other", -0.2, 0.0)
    z += np.select([kind == "video", kind == "web", kind == "text"], [0.4, -0.3, -0.5], 0.0)
    z += -0.35 * np.abs(np.log(w.duration / 15.0))
    z += -0.4 * w.plays - 1.0 * np.where(np.isnan(w.since), 0.0, np.exp(-np.nan_to_num(w.since) / 900.0))
    return z


def simulate(samples: int, rng: np.random.Generator) -> World:
    n = int(samples)
    hour = rng.uniform(10.0, 22.0, n)
    weekday = rng.integers(0, 7, n)
    weekend = weekday >= 5
    b = busy(hour)
    audience = rng.poisson(0.3 + 5.0 * b * np.where(weekend, 1.4, 1.0))
    dwell = np.where(audience > 0, rng.lognormal(math.log(8.0), 0.6, n), 0.0)
    members = rng.binomial(audience, MEMBER_SHARE)
    tiers = np.stack([rng.multinomial(m, TIER_SHARE) for m in members]) if n else np.zeros((0, 3), int)
    crowd = np.clip(np.rint(2.0 * b + rng.normal(0.0, 0.35, n)), 0, 2).astype(int)
    category = rng.choice(len(CATEGORIES), n, p=CATEGORY_SHARE)
    kind = rng.choice(len(CREATIVE_TYPES), n, p=TYPE_SHARE)
    duration = np.array([float(rng.choice(TYPE_DURATIONS[CREATIVE_TYPES[k]])) for k in kind])
    plays = rng.poisson(1.2, n)
    recent = rng.uniform(20.0, 3600.0, n) / np.maximum(plays, 1)
    long_ago = rng.uniform(3600.0, 6 * 3600.0, n)
    never = rng.random(n) < 0.5
    since = np.where(plays > 0, recent, np.where(never, np.nan, long_ago))
    world = World(hour, weekday, audience, dwell, tiers, crowd, category, kind, duration, plays, since,
                  np.zeros(n), np.zeros(n))
    world.probability = 1.0 / (1.0 + np.exp(-attention_logit(world)))
    world.label = (rng.random(n) < world.probability).astype(np.float64)
    return world


def features_of(w: World) -> np.ndarray:
    """[n, FEATURE_COUNT] through the gateway's own feature_vector, so training and serving agree."""
    crowd_names = ("low", "medium", "high")
    rows = np.zeros((len(w), FEATURE_COUNT), np.float32)
    for i in range(len(w)):
        minutes = round(float(w.hour[i]) * 60.0)
        context = ScoringContext(
            moment=MONDAY + timedelta(days=int(w.weekday[i]), minutes=minutes),
            audience=int(w.audience[i]), dwell_s=float(w.dwell[i]),
            tiers={"standard": int(w.tiers[i, 0]), "silver": int(w.tiers[i, 1]), "gold": int(w.tiers[i, 2])},
            crowd=crowd_names[int(w.crowd[i])])
        since = None if math.isnan(w.since[i]) else float(w.since[i])
        candidate = CandidateInfo(
            creative_id=f"c{i}", campaign_id="sim", category=CATEGORIES[int(w.category[i])],
            type=CREATIVE_TYPES[int(w.kind[i])], duration=float(w.duration[i]),
            plays_last_hour=int(w.plays[i]), seconds_since_last_play=since)
        rows[i] = feature_vector(context, candidate)
    return rows


# -------------------------------------------------------------------------------------- the model


@dataclass
class Mlp:
    w1: np.ndarray  # [F, H], on raw features (standardisation folded in)
    b1: np.ndarray  # [H]
    w2: np.ndarray  # [H, 1]
    b2: np.ndarray  # [1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        h = np.tanh(x.astype(np.float64) @ self.w1 + self.b1)
        return (1.0 / (1.0 + np.exp(-(h @ self.w2 + self.b2))))[:, 0]


def fit(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, rng: np.random.Generator) -> Mlp:
    """Plain mini-batch gradient descent with momentum on the mean log-loss (float64 throughout)."""
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-6] = 1.0
    xs = (x - mean) / std
    n, f = xs.shape
    w1 = rng.normal(0.0, 1.0 / math.sqrt(f), (f, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(0.0, 1.0 / math.sqrt(hidden), (hidden, 1))
    b2 = np.array([math.log(max(y.mean(), 1e-3) / max(1.0 - y.mean(), 1e-3))])
    params = [w1, b1, w2, b2]
    velocity = [np.zeros_like(p) for p in params]
    for epoch in range(epochs):
        lr = LEARNING_RATE * (0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) * 0.9 + 0.1)  # cosine decay
        order = rng.permutation(n)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            xb, yb = xs[idx], y[idx, None]
            h = np.tanh(xb @ w1 + b1)
            p = 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))
            dz = (p - yb) / len(idx)
            grads = [None, None, h.T @ dz + L2 * w2, dz.sum(axis=0)]
            dh = (dz @ w2.T) * (1.0 - h * h)
            grads[0] = xb.T @ dh + L2 * w1
            grads[1] = dh.sum(axis=0)
            for param, vel, grad in zip(params, velocity, grads):
                vel *= MOMENTUM
                vel -= lr * grad
                param += vel
    return Mlp(w1=w1 / std[:, None], b1=b1 - (mean / std) @ w1, w2=w2, b2=b2)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged)."""
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ------------------------------------------------------------------------------------------ export


def to_onnx(model: Mlp, doc: str, metadata: dict[str, str]) -> bytes:
    from onnx import TensorProto, checker, helper, numpy_helper

    f = model.w1.shape[0]
    graph = helper.make_graph(
        [helper.make_node("Gemm", [INPUT_NAME, "w1", "b1"], ["hidden_pre"]),
         helper.make_node("Tanh", ["hidden_pre"], ["hidden"]),
         helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME])],
        "ad_scorer",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(model.w1.astype(np.float32), "w1"),
         numpy_helper.from_array(model.b1.astype(np.float32), "b1"),
         numpy_helper.from_array(model.w2.astype(np.float32), "w2"),
         numpy_helper.from_array(model.b2.astype(np.float32), "b2")])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                                   ir_version=ONNX_IR_VERSION, producer_name="models/train_ad_scorer.py",
                                   producer_version="1", doc_string=doc)
    helper.set_model_props(onnx_model, metadata)
    checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


@dataclass
class Result:
    onnx: bytes
    auc_model: float
    auc_baseline: float
    auc_world: float
    loss_model: float
    loss_baseline: float
    loss_constant: float
    loss_world: float
    train_samples: int
    test_samples: int
    attention_rate: float


def train(samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED, epochs: int = DEFAULT_EPOCHS,
          hidden: int = DEFAULT_HIDDEN) -> Result:
    rng = np.random.default_rng(seed)
    world = simulate(samples, rng)
    x = features_of(world)
    y = world.label
    n_test = round(len(y) * HELD_OUT)
    train_idx, test_idx = np.arange(n_test, len(y)), np.arange(n_test)
    model = fit(x[train_idx], y[train_idx], hidden, epochs, rng)

    # The context-free baseline: each category x type's attention rate in the training samples.
    cell = world.category * len(CREATIVE_TYPES) + world.kind
    cells = len(CATEGORIES) * len(CREATIVE_TYPES)
    hits = np.bincount(cell[train_idx], weights=y[train_idx], minlength=cells)
    seen = np.bincount(cell[train_idx], minlength=cells)
    rate = (hits + y[train_idx].mean()) / (seen + 1.0)  # one pseudo-play at the mean rate
    y_test = y[test_idx]
    p_model = model.predict(x[test_idx])
    p_baseline = rate[cell[test_idx]]
    p_world = world.probability[test_idx]
    p_constant = np.full(len(test_idx), y[train_idx].mean())

    metadata = {
        FEATURES_METADATA_KEY: ",".join(FEATURE_NAMES),
        "trained_with": f"models/train_ad_scorer.py --samples {samples} --seed {seed} --epochs {epochs} "
                        f"--hidden {hidden}",
        "held_out_auc": f"{auc(y_test, p_model):.4f}",
        "baseline_auc": f"{auc(y_test, p_baseline):.4f}",
    }
    doc = ("Ad scorer (gateway/ads/scorer.py): probability that a play of a creative gets attention, "
           "trained in the synthetic world of models/train_ad_scorer.py. Input 'features' float32 "
           f"[N, {FEATURE_COUNT}], output 'score' float32 [N, 1].")
    data = to_onnx(model, doc, metadata)
    _check_with_onnxruntime(data, model, x[test_idx[:256]])
    return Result(onnx=data, auc_model=auc(y_test, p_model), auc_baseline=auc(y_test, p_baseline),
                  auc_world=auc(y_test, p_world), loss_model=log_loss(y_test, p_model),
                  loss_baseline=log_loss(y_test, p_baseline), loss_constant=log_loss(y_test, p_constant),
                  loss_world=log_loss(y_test, p_world), train_samples=len(train_idx),
                  test_samples=len(test_idx), attention_rate=float(y.mean()))


def _check_with_onnxruntime(data: bytes, model: Mlp, x: np.ndarray) -> None:
    """The exported graph gives what the numpy model gives (float32 rounding aside)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]
    if out.shape != (len(x), 1) or not np.allclose(out[:, 0], model.predict(x), atol=1e-4):
        raise RuntimeError("the exported ONNX model does not agree with the trained one")


def write(data: bytes, out: Path) -> None:
    """Atomically: a temporary file in the same directory, renamed into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="simulated plays (a quarter held out)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN, help="hidden units")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.samples < 200:
        parser.error("--samples must be at least 200")
    result = train(args.samples, args.seed, args.epochs, args.hidden)
    write(result.onnx, args.out)
    print(f"simulated plays: {result.train_samples} training, {result.test_samples} held out; "
          f"attention rate {result.attention_rate:.3f}")
    print("held out                         AUC    log-loss")
    print(f"  constant rate                  0.500  {result.loss_constant:.4f}")
    print(f"  category x type rate (no ctx)  {result.auc_baseline:.3f}  {result.loss_baseline:.4f}")
    print(f"  ad scorer                      {result.auc_model:.3f}  {result.loss_model:.4f}")
    print(f"  the world's own probabilities  {result.auc_world:.3f}  {result.loss_world:.4f}")
    print(f"wrote {args.out}: {len(result.onnx)} bytes, sha256 {hashlib.sha256(result.onnx).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

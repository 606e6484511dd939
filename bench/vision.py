"""Benchmark of on-device visit detection: stage times, sustained fps, four cameras, latency, RSS, accuracy.

    .venv/bin/python bench/vision.py [--models-dir ../shared/models] [--seconds 30]

Prints:
  (1) one camera, detection on every frame at 640x360: per-stage time (decode, motion, inference,
      tracking) and sustained fps                                             target >= 25 fps
  (2) four cameras at 10 fps each with motion gating on the busy-hall video, through the real capture
      threads, frame hub and visit service: processed fps per camera        target 10 each, not behind
      frame-to-event latency p50/p95                                          target p95 <= 150 ms
      peak RSS                                                                target <= 400 MB
  (3) counting error on the entrance video (hand count: 6 in, 6 out) with configs/demo-mall.yaml's lines
  (4) tracking accuracy (MOTA, IDF1 with motmetrics) on synthetic ground truth: the shared videos have
      counts but no box-level ground truth
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
sys.path.insert(0, str(ROOT))
from isolated import peak_rss_mb, run_isolated  # noqa: E402
VIDEOS = ROOT.parent / "shared" / "data" / "video"
ENTRANCE = VIDEOS / "entrance_one_by_one.mp4"
BUSY_HALL = VIDEOS / "busy_hall_1280x720.avi"




def percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


# ------------------------------------------------------------------ (1) one camera, every frame

def phase_single(models_dir: str) -> dict:
    import cv2

    from gateway.vision.detect import PersonDetector
    from gateway.vision.pipeline import CameraAnalytics
    from gateway.vision.settings import AnalyticsSettings, LineSettings, MotionSettings

    cv2.setNumThreads(1)
    detector = PersonDetector.from_model("yolox_nano", models_dir, threads=1)
    settings = AnalyticsSettings(motion=MotionSettings(enabled=False),
                                 lines=[LineSettings(id="door", points=[(0, 350), (640, 350)])])
    size = (640, 360)
    analytics = CameraAnalytics("bench", settings, detector, size, fps=10)
    capture = cv2.VideoCapture(str(ENTRANCE))
    decode_ms, frames = [], 0
    start = time.perf_counter()
    while frames < 600:
        t0 = time.perf_counter()
        ok, image = capture.read()
        if not ok:
            break
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        decode_ms.append((time.perf_counter() - t0) * 1000)
        analytics.process(image, now=frames / 10)
        frames += 1
    elapsed = time.perf_counter() - start
    times = analytics.times.summary()
    times["decode"] = {"mean_ms": round(sum(decode_ms) / len(decode_ms), 2), "p95_ms": round(percentile(decode_ms, 95), 2)}
    return {"fps": frames / elapsed, "frames": frames, "times": times}


# --------------------------------------------------------------- (2) four live cameras, gated

def phase_four_cameras(models_dir: str, seconds: float) -> dict:

    from drivers.camera import CameraSettings
    from gateway.bus import EventBus
    from gateway.frames import FrameHub
    from gateway.vision.capture import FrameGrabber
    from gateway.visits import VisitService

    frame_w, frame_h = 1280, 720
    cameras = [CameraSettings(id=f"cam-{i}", kind="camera", url=str(BUSY_HALL), fps=10, loop=True, realtime=True,
                              analytics={"lines": [{"id": "mid", "points": [[0, frame_h / 2], [frame_w, frame_h / 2]]}],
                                         "zones": [{"id": "hall", "polygon": [[200, 150], [1080, 150], [1080, 650],
                                                                              [200, 650]]}],
                                         "counts_interval": 10})
               for i in range(4)]
    loop = asyncio.new_event_loop()
    bus = EventBus()
    events: list = []
    bus.subscribe("count", events.append)
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(bus.start(), loop).result()
    hub = FrameHub()
    grabbers = []
    for camera in cameras:
        grabber = FrameGrabber(camera.url, loop=True, realtime=True).start()
        hub.attach(camera.id, grabber)
        grabbers.append(grabber)
    service = VisitService(bus, hub, Path(models_dir), threads=1)
    service.apply(cameras)
    time.sleep(3)  # warm-up: models loaded, backgrounds learnt
    before = {c["id"]: (c["frames_processed"], c["frames_inferred"]) for c in service.cameras()}
    read_before = [g.frames_read for g in grabbers]
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    stats = service.cameras()
    read = [g.frames_read - r for g, r in zip(grabbers, read_before)]
    latencies = []
    for worker in service._workers.values():
        latencies.extend(worker.analytics.times.samples.get("frame_to_event", []))
    result = {
        "per_camera_fps": [(c["frames_processed"] - before[c["id"]][0]) / elapsed for c in stats],
        "per_camera_inferred_fps": [(c["frames_inferred"] - before[c["id"]][1]) / elapsed for c in stats],
        "source_fps": [r / elapsed for r in read],
        "latency_p50": percentile(latencies, 50), "latency_p95": percentile(latencies, 95),
        "events": len(events),
        "stage_times": stats[0]["stage_times"],
        "rss_mb": peak_rss_mb(),
    }
    service.stop()
    for g in grabbers:
        g.stop()
    asyncio.run_coroutine_threadsafe(bus.stop(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    return result


# ------------------------------------------------------------------------- (3) counting error

def phase_counting(models_dir: str) -> dict:
    import argparse as ap
    import io
    import json

    from gateway.vision.replay import run_replay

    args = ap.Namespace(video=ENTRANCE, config=str(ROOT / "configs" / "demo-mall.yaml"), camera="cam-entrance-1",
                        line=None, tracks_out=None, events_out=None, models_dir=models_dir, show_fps=False)
    out = io.StringIO()
    if run_replay(args, out) != 0:
        raise RuntimeError("replay failed")
    summary = json.loads(out.getvalue())
    return {"entries": summary["entries"], "exits": summary["exits"], "fps": summary["fps"]}


# ------------------------------------------------------------------- (4) tracking accuracy

def phase_tracking_accuracy(seed: int = 7, people: int = 25, frames: int = 400) -> dict:
    """People walking across a 1280x720 view, detections with noise, misses and false boxes."""
    import motmetrics as mm
    import numpy as np

    from gateway.vision.track import Tracker, iou_matrix

    rng = np.random.default_rng(seed)
    start = rng.uniform([0, 100], [1280, 620], size=(people, 2))
    velocity = rng.normal(0, 4, size=(people, 2))
    born = rng.integers(0, frames // 2, size=people)
    life = rng.integers(80, 250, size=people)
    size = np.column_stack([rng.uniform(40, 70, people), rng.uniform(110, 170, people)])
    tracker = Tracker()
    acc = mm.MOTAccumulator(auto_id=True)
    for f in range(frames):
        alive = (f >= born) & (f < born + life)
        centres = start + velocity * (f - born)[:, None]
        alive &= (centres[:, 0] > 0) & (centres[:, 0] < 1280) & (centres[:, 1] > 0) & (centres[:, 1] < 720)
        gt_ids = np.flatnonzero(alive)
        gt = np.column_stack([centres[gt_ids] - size[gt_ids] / 2, size[gt_ids]])  # x, y, w, h
        seen = gt_ids[rng.random(len(gt_ids)) > 0.08]  # 8 % missed detections
        noisy = centres[seen] + rng.normal(0, 2.5, size=(len(seen), 2))
        boxes = np.column_stack([noisy - size[seen] / 2, noisy + size[seen] / 2])
        scores = np.where(rng.random(len(seen)) < 0.15, rng.uniform(0.15, 0.45, len(seen)),
                          rng.uniform(0.6, 0.95, len(seen)))
        false = rng.uniform([0, 0], [1200, 600], size=(rng.poisson(0.5), 2))
        boxes = np.vstack([boxes, np.column_stack([false, false + [50, 140]])]) if len(false) else boxes
        scores = np.concatenate([scores, rng.uniform(0.3, 0.7, len(false))]) if len(false) else scores
        tracks = tracker.update(boxes.astype(np.float32), scores.astype(np.float32))
        hyp = np.array([t.box for t in tracks], float).reshape(-1, 4)
        gt_xyxy = np.column_stack([gt[:, :2], gt[:, :2] + gt[:, 2:]])
        # motmetrics 1.4's own iou_matrix calls np.asfarray, gone in NumPy 2: same distances, our IoU.
        distances = 1.0 - iou_matrix(gt_xyxy, hyp) if len(gt_xyxy) and len(hyp) else np.empty((len(gt_xyxy), len(hyp)))
        distances[distances > 0.5] = np.nan
        acc.update(list(gt_ids), [t.track_id for t in tracks], distances)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="synthetic")
    return {k: float(summary[k].iloc[0]) for k in ("mota", "idf1", "num_switches")}




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=os.environ.get("GATEWAY_MODELS_DIR", str(ROOT.parent / "shared" / "models")))
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")

    single = run_isolated(ctx, phase_single, args.models_dir)
    print(f"(1) one camera, detection on every frame, 640x360: {single['fps']:.1f} fps sustained over "
          f"{single['frames']} frames (target >= 25)")
    for stage in ("decode", "motion", "inference", "tracking"):
        if stage in single["times"]:
            t = single["times"][stage]
            print(f"      {stage:<10} mean {t['mean_ms']:6.2f} ms   p95 {t['p95_ms']:6.2f} ms")

    four = run_isolated(ctx, phase_four_cameras, args.models_dir, args.seconds)
    fps = ", ".join(f"{v:.1f}" for v in four["per_camera_fps"])
    inferred = ", ".join(f"{v:.1f}" for v in four["per_camera_inferred_fps"])
    print(f"(2) four cameras at 10 fps, busy hall 1280x720, motion gating, {args.seconds:.0f} s: processed fps "
          f"[{fps}] (inference ran at [{inferred}]; sources gave {four['source_fps'][0]:.1f} fps each)")
    print(f"      frame-to-event latency p50 {four['latency_p50']:.0f} ms, p95 {four['latency_p95']:.0f} ms "
          f"(target p95 <= 150); {four['events']} events; peak RSS {four['rss_mb']:.0f} MB (target <= 400)")
    for stage, t in four["stage_times"].items():
        print(f"      {stage:<15} mean {t['mean_ms']:6.2f} ms   p95 {t['p95_ms']:6.2f} ms")

    counting = run_isolated(ctx, phase_counting, args.models_dir)
    print(f"(3) entrance video with the demo config's lines: {counting['entries']} in, {counting['exits']} out "
          f"(hand count 6 in, 6 out: error {counting['entries'] - 6:+d} / {counting['exits'] - 6:+d}); "
          f"replayed at {counting['fps']:.0f} fps")

    accuracy = run_isolated(ctx, phase_tracking_accuracy)
    print(f"(4) tracking on synthetic ground truth (25 people, 8 % misses, noisy and low-score boxes): "
          f"MOTA {accuracy['mota']:.3f}, IDF1 {accuracy['idf1']:.3f}, id switches {accuracy['num_switches']:.0f}")


if __name__ == "__main__":
    main()

"""`gateway vision replay`: one camera's whole pipeline over a video file, as fast as it goes.

For site engineers (does this line count right on yesterday's recording?) and for evaluation:
tracks in MOTChallenge format and visit events as JSON lines, both with frame numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from ..config import ConfigError, load_config
from ..models import ModelError, models_dir
from .settings import AnalyticsSettings, LineSettings


def parse_line(text: str) -> list[tuple[float, float]]:
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--line wants X1,Y1,X2,Y2 in video pixels, got {text!r}") from None
    return [(x1, y1), (x2, y2)]


def analytics_settings(args: argparse.Namespace) -> tuple[AnalyticsSettings, float | None, Path | None, int]:
    """Settings from --config/--camera (if given) with --line on top; plus the config's fps and models."""
    fps, configured_dir, threads = None, None, 1
    settings = AnalyticsSettings()
    if args.config:
        config = load_config(args.config)
        configured_dir, threads = config.models.dir, config.models.threads
        cameras = [d for d in config.devices if d.kind == "camera"]
        camera = next((c for c in cameras if c.id == args.camera), None) if args.camera else \
            (cameras[0] if len(cameras) == 1 else None)
        if camera is None:
            raise SystemExit(f"--camera must name one of the cameras in {args.config}: "
                             f"{', '.join(c.id for c in cameras) or 'none'}")
        fps = camera.fps
        if camera.analytics is not None:
            settings = camera.analytics
    if args.line:
        settings = settings.model_copy(update={"lines": [LineSettings(id="line", points=args.line, in_side="left")]})
    return settings, fps, configured_dir, threads


def run_replay(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    import cv2  # heavy: imported when a replay runs, not whenever the CLI starts

    cv2.setNumThreads(1)  # as on the gateway: one thread for OpenCV, one for onnxruntime
    from .capture import FpsLimiter
    from .detect import detector_for
    from .pipeline import CameraAnalytics

    try:
        settings, camera_fps, configured_dir, threads = analytics_settings(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        detector = detector_for(settings, models_dir(args.models_dir or configured_dir), threads)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    capture = cv2.VideoCapture(str(args.video))
    if not capture.isOpened():
        print(f"error: cannot open video {args.video}", file=sys.stderr)
        return 1
    video_fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    # With a configured camera, analyse at its fps as the live gateway would (a 25 fps recording of a
    # camera analysed at 10 fps); without one, every frame.
    analysis_fps = min(camera_fps, video_fps) if camera_fps else video_fps
    limiter = FpsLimiter(analysis_fps) if analysis_fps < video_fps else None
    analytics = CameraAnalytics(args.camera or "replay", settings, detector, size, analysis_fps)
    tracks_out = open(args.tracks_out, "w") if args.tracks_out else None
    events_out = open(args.events_out, "w") if args.events_out else None
    entries = exits = frame_number = 0
    start = time.perf_counter()
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frame_number += 1
            if limiter is not None and not limiter.due(frame_number / video_fps):
                continue
            result = analytics.process(image, now=frame_number / video_fps)
            if tracks_out:
                for track in result.tracks if result.inferred else []:
                    x1, y1, x2, y2 = (float(v) for v in track.box)
                    tracks_out.write(f"{frame_number},{track.track_id},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},"
                                     f"{track.score:.3f},-1,-1,-1\n")
            for event_type, data in result.events:
                entries += event_type == "visit.entry"
                exits += event_type == "visit.exit"
                if events_out:
                    events_out.write(json.dumps({"frame": frame_number, "time_s": round(frame_number / video_fps, 3),
                                                 "type": event_type, **data}) + "\n")
            if args.show_fps and frame_number % 100 == 0:
                print(f"frame {frame_number}: {frame_number / (time.perf_counter() - start):.1f} fps", file=sys.stderr)
    finally:
        capture.release()
        for f in (tracks_out, events_out):
            if f:
                f.close()
    elapsed = time.perf_counter() - start
    summary = {"frames": frame_number, "frames_analysed": analytics.frames_processed,
               "frames_inferred": analytics.frames_inferred, "entries": entries,
               "exits": exits, "fps": round(frame_number / elapsed, 1) if elapsed else 0.0,
               "stage_times": analytics.times.summary()}
    print(json.dumps(summary), file=out)
    return 0


def register(subparsers) -> None:
    vision = subparsers.add_parser("vision", help="camera analytics tools")
    sub = vision.add_subparsers(dest="vision_command", required=True)
    replay = sub.add_parser("replay", help="run one camera's pipeline over a video file as fast as possible")
    replay.add_argument("video", type=Path)
    replay.add_argument("--config", help="site config: take the camera's analytics settings from it")
    replay.add_argument("--camera", help="camera id in --config")
    replay.add_argument("--line", type=parse_line, metavar="X1,Y1,X2,Y2",
                        help="a counting line in video pixels; 'in' is the left side walking from 1 to 2")
    replay.add_argument("--tracks-out", help="tracks in MOTChallenge format (frame,id,x,y,w,h,score,-1,-1,-1)")
    replay.add_argument("--events-out", help="visit events as JSON lines, with frame numbers")
    replay.add_argument("--models-dir", help="where the model files are (default: config, $GATEWAY_MODELS_DIR)")
    replay.add_argument("--show-fps", action="store_true", help="print the speed every 100 frames")
    replay.set_defaults(func=run_replay)

"""`gateway faces ...`: tools for site engineers. This part: `calibrate`, to choose a threshold."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..models import ModelError, models_dir


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..vision.detect import FaceDetector
    from .calibrate import calibrate, load_folder, load_listing, recommend
    from .embed import FaceEmbedder

    try:
        groups = load_listing(args.listing, args.folder) if args.listing else load_folder(args.folder)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the labelled images: {exc}", file=sys.stderr)
        return 1
    directory = models_dir(args.models_dir)
    try:
        detector = FaceDetector.from_model("yunet", directory)
        embedder = FaceEmbedder.from_model(args.embedder, directory)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = calibrate(groups, detector, embedder)
    threshold = recommend(report, args.target_far)
    if args.json:
        i = int(abs(report.thresholds - threshold).argmin())
        print(json.dumps({"recommended_threshold": threshold, "target_far": args.target_far,
                          "far": float(report.far[i]), "frr": float(report.frr[i]), "rank1": report.rank1,
                          "persons": report.persons, "photos": report.photos, "skipped": [str(p) for p in report.skipped]}))
    else:
        print(report.summary())
        print(f"recommended threshold for a false-accept rate of at most {args.target_far:g}: {threshold:.3f}")
    return 0


def register(subparsers) -> None:
    faces = subparsers.add_parser("faces", help="face recognition tools for site engineers")
    sub = faces.add_subparsers(dest="faces_command", required=True)
    calibrate = sub.add_parser("calibrate", help="false-accept and false-reject rates over thresholds, from "
                                                 "labelled photos (one sub-folder per person)")
    calibrate.add_argument("folder", type=Path, help="one sub-folder per person; or the images of --listing")
    calibrate.add_argument("--listing", type=Path, help="a file grouping image names by identity instead")
    calibrate.add_argument("--target-far", type=float, default=0.001, help="false-accept rate to stay under")
    calibrate.add_argument("--embedder", default="mobilefacenet", help="face embedding model in the manifest")
    calibrate.add_argument("--models-dir", help="where the model files are (default: $GATEWAY_MODELS_DIR)")
    calibrate.add_argument("--json", action="store_true", help="print the result as JSON")
    calibrate.set_defaults(func=cmd_calibrate)

"""`gateway faces ...`: tools for site engineers.

- `calibrate`: false-accept and false-reject rates on labelled photos, to choose the threshold;
- `enroll`, `identify`, `delete`, `list`, `audit`: the site's face store (gateway.faces.store),
  from the site config's `faces:` section. Enrolment needs the person's consent on the command
  line (notice version, scope; a guardian for a child under 14). Photos are read into memory only.
  Every change is audited with the actor `cli:<user>`. Deletion, listing and the audit work even
  where face recognition is switched off (a person can always be erased).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..models import ModelError, models_dir


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, load_folder, load_listing, recommend
    from .face_models import load_face_models

    try:
        groups = load_listing(args.listing, args.folder) if args.listing else load_folder(args.folder)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the labelled images: {exc}", file=sys.stderr)
        return 1
    directory = models_dir(args.models_dir)
    try:
        detector, embedder = load_face_models(directory, args.embedder)
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


# ------------------------------------------------------------------------------- the face store


class _Refused(Exception):
    """A command that cannot go on; the message is printed as `error: ...` with exit status 1."""


def cli_actor() -> str:
    """`cli:<user>`: who made a change from the command line, for the audit log."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def _load(args: argparse.Namespace, need_enabled: bool):
    from ..config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise _Refused(str(exc)) from None
    if need_enabled and not config.faces.enabled:
        raise _Refused(f"face recognition is switched off for site {config.site_id} (faces.enabled: false in "
                       f"{args.config}); it needs the site's legal basis and notice first")
    return config


def _models(config):
    from .face_models import load_face_models

    return load_face_models(models_dir(config.models.dir), config.faces.embedder, config.models.threads)


def _read_images(paths: list[Path]) -> list[bytes]:
    images = []
    for path in paths:
        try:
            images.append(Path(path).read_bytes())
        except OSError as exc:
            raise _Refused(f"cannot read {path}: {exc.strerror or exc}") from None
    return images


def _aware(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Refused(f"{text!r} is not an ISO 8601 date and time (e.g. 2025-06-01T09:30:00+08:00)") from None
    if moment.tzinfo is None:
        raise _Refused(f"{text!r} needs a UTC offset (e.g. +08:00 or Z)")
    return moment


def _run(func, args: argparse.Namespace) -> int:
    """Run a face store command; any refusal (consent, photo, key, config, model) is one line on
    stderr and exit status 1. ConsentError and EnrolError are ValueErrors."""
    from .store import FaceStoreError

    try:
        return func(args)
    except (_Refused, FaceStoreError, ModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _enroll(args: argparse.Namespace) -> int:
    from .enrol import embed_images
    from .store import Consent, open_face_store, parse_consent

    config = _load(args, need_enabled=True)
    given_at = _aware(args.given_at)
    guardian = None
    if args.guardian is not None:
        guardian = {"guardian_id": args.guardian,
                    "given_at": _aware(args.guardian_given_at) if args.guardian_given_at else given_at}
    elif args.under_14:
        raise _Refused("a child under 14 needs the consent of a parent or guardian: give --guardian ID "
                       "(and --guardian-given-at if it was given at another time)")
    consent: Consent = parse_consent({
        "person_id": args.person, "scope": [s.strip() for s in args.scope.split(",") if s.strip()],
        "notice_version": args.notice_version, "given_at": given_at, "under_14": args.under_14,
        "guardian": guardian, "method": args.consent_method}, args.person)
    images = _read_images(args.images)
    with open_face_store(config) as store:  # opened first: a wrong key fails before the models load
        detector, embedder = _models(config)
        vectors = embed_images(images, detector, embedder, config.faces.match.min_face_px,
                               names=[str(p) for p in args.images])
        del images
        added = store.enrol(args.person, vectors, consent, config.faces.embedder, cli_actor())
    print(json.dumps({"person_id": args.person, "templates": added}))
    return 0


def _identify(args: argparse.Namespace) -> int:
    from .enrol import identify_image
    from .store import open_face_store

    config = _load(args, need_enabled=True)
    match = config.faces.match
    image = _read_images([args.image])[0]
    with open_face_store(config) as store:
        gallery = store.load_gallery(config.faces.embedder, purpose=args.purpose)
    detector, embedder = _models(config)
    faces = identify_image(image, detector, embedder, gallery, threshold=match.threshold,
                           margin=match.margin, min_face_px=match.min_face_px)
    print(json.dumps(faces))
    return 0


def _delete(args: argparse.Namespace) -> int:
    from .store import open_face_store

    from ..access.store import AccessStore

    config = _load(args, need_enabled=False)
    with open_face_store(config) as store:
        result = store.delete_person(args.person, cli_actor())
    # The person's decisions by face in the local access log are face-derived records too.
    result["access_log_entries"] = 0
    if config.access_store_path.exists():
        with AccessStore(config.access_store_path) as access:
            result["access_log_entries"] = access.delete_face_records(args.person)
    print(json.dumps(result))
    return 0


def _list(args: argparse.Namespace) -> int:
    from .store import open_face_store

    config = _load(args, need_enabled=False)
    with open_face_store(config) as store:
        print(json.dumps(store.person_summaries(), indent=1))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from .store import open_face_store

    config = _load(args, need_enabled=False)
    with open_face_store(config) as store:
        if args.verify:
            ok, problem = store.verify_audit()
            entries = store.count_audit_entries()
            print(json.dumps({"ok": ok, "problem": problem, "entries": entries}))
            return 0 if ok else 1
        print(json.dumps(store.audit_entries(args.limit), indent=1))
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    return _run(_enroll, args)


def cmd_identify(args: argparse.Namespace) -> int:
    return _run(_identify, args)


def cmd_delete(args: argparse.Namespace) -> int:
    return _run(_delete, args)


def cmd_list(args: argparse.Namespace) -> int:
    return _run(_list, args)


def cmd_audit(args: argparse.Namespace) -> int:
    return _run(_audit, args)


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

    enroll = sub.add_parser("enroll", aliases=["enrol"],
                            help="enrol a person's face from photos (one face each), with their consent")
    enroll.add_argument("--config", required=True, help="site config file (YAML)")
    enroll.add_argument("--person", required=True, help="the person's id (as the platform knows them)")
    enroll.add_argument("--notice-version", required=True, help="the version of the privacy notice they were shown")
    enroll.add_argument("--scope", required=True, help="purposes consented to, comma-separated: access[,visits,...]")
    enroll.add_argument("--consent-method", default="paper", help="how consent was collected: paper (default), "
                                                                  "app, kiosk, ...")
    enroll.add_argument("--given-at", help="when consent was given, ISO 8601 with offset (default: now)")
    enroll.add_argument("--under-14", action="store_true", help="the person is a child under 14")
    enroll.add_argument("--guardian", help="the consenting parent's or guardian's id (required with --under-14)")
    enroll.add_argument("--guardian-given-at", help="when the guardian consented (default: --given-at)")
    enroll.add_argument("images", nargs="+", type=Path, help="photos, each showing the person's face only")
    enroll.set_defaults(func=cmd_enroll)

    identify = sub.add_parser("identify", help="the enrolled persons recognised in a photo (JSON, every face)")
    identify.add_argument("--config", required=True, help="site config file (YAML)")
    identify.add_argument("--purpose", help="only persons whose consent covers this purpose (e.g. access)")
    identify.add_argument("image", type=Path)
    identify.set_defaults(func=cmd_identify)

    delete = sub.add_parser("delete", help="erase a person's templates and consent record (audited)")
    delete.add_argument("--config", required=True, help="site config file (YAML)")
    delete.add_argument("--person", required=True)
    delete.set_defaults(func=cmd_delete)

    listing = sub.add_parser("list", help="enrolled persons: template counts and consent (never vectors)")
    listing.add_argument("--config", required=True, help="site config file (YAML)")
    listing.set_defaults(func=cmd_list)

    audit = sub.add_parser("audit", help="the face store's audit log, or --verify its hash chain (exit 1 if broken)")
    audit.add_argument("--config", required=True, help="site config file (YAML)")
    audit.add_argument("--verify", action="store_true", help="check the chain instead of printing it")
    audit.add_argument("--limit", type=int, help="only the last LIMIT entries")
    audit.set_defaults(func=cmd_audit)

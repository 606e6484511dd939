"""`gateway models list | verify | fetch`: what a site engineer runs to get the model files in place.

`register(subparsers)` adds the `models` command to the gateway's argument parser; each sub-command
sets `func(args) -> exit code`, as the other gateway commands do.

Exit codes: `verify NAME...` fails (1) when any named model is missing or corrupt. `verify` with no
names checks every model whose file is there and fails only for a corrupt one: a model the site does
not use need not be present, but a file that is present and wrong is always a problem. `fetch` fails
when any download fails. An unknown model name or an unreadable manifest is a usage error (2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .models import ModelError, ModelManifest, ModelMissingError, models_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="models directory (default: $GATEWAY_MODELS_DIR, else var/models)")
    common.add_argument("--manifest", help="model manifest (default: the gateway's models/manifest.yaml)")
    return common


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    common = _common_options()
    models = subparsers.add_parser("models", help="list, verify and download the model files")
    sub = models.add_subparsers(dest="models_command", required=True)

    list_ = sub.add_parser("list", parents=[common], help="every known model and whether its file is here")
    list_.set_defaults(func=cmd_list)

    verify = sub.add_parser("verify", parents=[common], help="check model files against their sha256")
    verify.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all present)")
    verify.set_defaults(func=cmd_verify)

    fetch = sub.add_parser("fetch", parents=[common], help="download model files and check their sha256")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.set_defaults(func=cmd_fetch)
    return models


def _context(args: argparse.Namespace) -> tuple[ModelManifest, Path]:
    manifest = ModelManifest.load(args.manifest) if args.manifest else ModelManifest.load()
    return manifest, models_dir(args.dir)


def _resolve(args: argparse.Namespace, names: list[str]) -> tuple[ModelManifest, Path] | int:
    """The manifest and directory for a command, or the exit code for a bad manifest or name."""
    try:
        manifest, directory = _context(args)
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    unknown = [name for name in names if name not in manifest.names]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)} (known: {', '.join(manifest.names)})", file=sys.stderr)
        return EXIT_USAGE
    return manifest, directory


def _size(path: Path, expected: int | None) -> str:
    size = path.stat().st_size if path.is_file() else expected
    if size is None:
        return "?"
    return f"{size / 1e6:.1f} MB" if size >= 1_000_000 else f"{size / 1e3:.0f} kB"


def cmd_list(args: argparse.Namespace) -> int:
    resolved = _resolve(args, [])
    if isinstance(resolved, int):
        return resolved
    manifest, directory = resolved
    rows = [("NAME", "TASK", "FILE", "STATUS", "SIZE")]
    for spec in manifest.models:
        rows.append((spec.name, spec.task, spec.file, manifest.status(spec.name, directory),
                     _size(directory / spec.file, spec.size_bytes)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"models directory: {directory}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    resolved = _resolve(args, args.names)
    if isinstance(resolved, int):
        return resolved
    manifest, directory = resolved
    required = bool(args.names)
    status = EXIT_OK
    for name in args.names or manifest.names:
        try:
            path = manifest.verify(name, directory)
        except ModelMissingError as exc:
            if required:
                status = EXIT_FAILED
                print(f"{name}: missing: {exc}")
            else:
                print(f"{name}: missing (not checked)")
            continue
        except ModelError as exc:
            status = EXIT_FAILED
            print(f"{name}: corrupt: {exc}")
            continue
        print(f"{name}: ok ({path})")
    return status


def cmd_fetch(args: argparse.Namespace) -> int:
    resolved = _resolve(args, args.names)
    if isinstance(resolved, int):
        return resolved
    manifest, directory = resolved
    status = EXIT_OK
    for name in args.names:
        already = manifest.status(name, directory) == "present"
        try:
            path = manifest.fetch(name, directory)
        except ModelError as exc:
            status = EXIT_FAILED
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        print(f"{name}: {'already present' if already else 'downloaded'}: {path}")
    return status

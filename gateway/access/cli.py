"""`gateway access ...`: what site engineers ask of the doors. This part: `log`, the recent decisions."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import load_site_config
from .store import AccessStore


def cmd_log(args: argparse.Namespace) -> int:
    config = load_site_config(args.config)
    if config is None:
        return 1
    path = config.access_store_path
    if not path.exists():
        print(f"error: no access store at {path} (the gateway has not run with this config yet)", file=sys.stderr)
        return 1
    with AccessStore(path) as store:
        entries = store.log_entries(door=args.door, person_id=args.person, limit=args.limit)
        version = store.version
    if args.json:
        print(json.dumps({"version": version, "decisions": entries}))
        return 0
    print(f"access set version {version}; newest {len(entries)} decisions first")
    for e in entries:
        verdict = "granted" if e["granted"] else f"denied ({e['reason']})"
        print(f"{e['at']}  {e['door']:<16} {e['method']:<11} {e['person_id'] or '-':<16} {verdict}")
    return 0


def register(subparsers) -> None:
    access = subparsers.add_parser("access", help="access control tools for site engineers")
    sub = access.add_subparsers(dest="access_command", required=True)
    log = sub.add_parser("log", help="the recent access decisions kept on this gateway (access.keep_events)")
    log.add_argument("--config", required=True, help="the site config file")
    log.add_argument("--door", help="only this door")
    log.add_argument("--person", help="only this person id")
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--json", action="store_true", help="print JSON")
    log.set_defaults(func=cmd_log)

"""`gateway ads ...`: screens and ad rotation for site engineers. This part: `plan`.

    gateway ads plan --config site.yaml --screen lobby-1 --start 2026-03-02T08:00:00+08:00 --hours 2
    gateway ads plan --config site.yaml --screen lobby-1 --start ... --hours 24 --catalog ads-sync.json

prints the plan as JSON: `{"screen", "version", "timezone", "items": [{start, end, creative_id,
campaign_id}, ...]}` (times in the site's time zone; campaign_id null for the default loop). The
catalog comes from the gateway's ads store, or with `--catalog` from an `ads.sync` JSON body (or a
whole downlink command with it under `args`), so a plan can be computed without a running gateway.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from ..config import load_site_config
from .model import AdsSync, Screen
from .planner import plan
from .store import AdsStore, load_catalog_file


def _screen(config, screen_id: str) -> Screen | None:
    return next((screen for screen in config.screens if screen.id == screen_id), None)


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_site_config(args.config)
    if config is None:
        return 1
    screen = _screen(config, args.screen)
    if screen is None:
        known = ", ".join(s.id for s in config.screens) or "none"
        print(f"error: no screen {args.screen!r} in {args.config} (screens: {known})", file=sys.stderr)
        return 1
    try:
        start = datetime.fromisoformat(args.start)
    except ValueError:
        print(f"error: --start {args.start!r} is not an ISO 8601 time", file=sys.stderr)
        return 1
    zone = ZoneInfo(config.timezone)
    if start.tzinfo is None:  # a local time of the site
        start = start.replace(tzinfo=zone)
    if not 0 < args.hours <= 24 * 31:
        print("error: --hours must be more than 0 and at most 744", file=sys.stderr)
        return 1
    if args.catalog:
        try:
            catalog = load_catalog_file(args.catalog)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        path = config.ads_store_path
        if not path.exists():
            print(f"error: no ads store at {path} (the gateway has not received ads.sync yet); "
                  "use --catalog FILE", file=sys.stderr)
            return 1
        with AdsStore(path) as store:
            catalog = store.load()
    items = plan(catalog, screen, start, args.hours, zone, seed=args.seed)
    print(json.dumps({"screen": screen.id, "version": catalog.version, "timezone": config.timezone,
                      "items": [item.as_json(zone) for item in items]}, ensure_ascii=False))
    return 0


SYNC_SCHEMA_DESCRIPTION = (
    "The args of the ads.sync command (gateway.ads.model.AdsSync): creatives, campaigns and the default "
    "loop, as a versioned snapshot (replaces everything) or delta (removals first, then upserts by id; "
    "default_loop absent leaves it as it is), with the version rules of access.sync. Validated "
    "completely, then applied in one transaction: a refused sync changes nothing. The gateway also "
    "refuses what a schema cannot say: an id given twice, a campaign or default loop naming a creative "
    "the resulting catalog does not hold, a text creative without text or with a media_url, an image or "
    "video without sha256. Durations are seconds or a number with a unit. Generated from the model by "
    "`gateway ads sync-schema`; docs/screens.md explains the content model.")


def sync_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the ads.sync args, from the pydantic model."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ads.sync command args",
            "description": SYNC_SCHEMA_DESCRIPTION,
            **{k: v for k, v in AdsSync.model_json_schema().items() if k not in ("title", "description")}}


def cmd_sync_schema(args: argparse.Namespace) -> int:
    print(json.dumps(sync_schema(), indent=2, ensure_ascii=False))
    return 0


def register(subparsers) -> None:
    ads = subparsers.add_parser("ads", help="screens and ad rotation")
    sub = ads.add_subparsers(dest="ads_command", required=True)
    p = sub.add_parser("plan", help="what a screen will play (JSON)")
    p.add_argument("--config", required=True, help="the site config file")
    p.add_argument("--screen", required=True, help="a screen id of the config's screens")
    p.add_argument("--start", required=True, help="ISO 8601 start (without an offset: site local time)")
    p.add_argument("--hours", type=float, required=True, help="how many hours to plan")
    p.add_argument("--seed", type=int, default=0, help="varies the order between screens (default 0)")
    p.add_argument("--catalog", help="an ads.sync JSON body to plan from, instead of the gateway's ads store")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("sync-schema", help="the JSON Schema of the ads.sync command's args")
    p.set_defaults(func=cmd_sync_schema)

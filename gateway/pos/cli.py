"""`gateway pos parse FILE`: the receipts in a capture of a till's printer bytes, and what they read as."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .escpos import parse_receipts
from .fields import BUILTIN_TEMPLATES, ReceiptTemplate, extract


def _site(path: str):
    """The site config whose `pos.templates` and `timezone` to use."""
    from ..config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def receipt_report(receipt, template: ReceiptTemplate | None, tz: str) -> dict:
    """What `gateway pos parse` prints for one receipt."""
    parsed = extract(receipt.text, template, tz=tz)
    if parsed is None:
        return {"parsed": False, "sha256": receipt.sha256, "ended_by": receipt.ended_by, "text": receipt.text}
    entry = {
        "parsed": True, "receipt_no": parsed.receipt_no, "time": parsed.time,
        "total": None if parsed.total is None else str(parsed.total),
        "paid": None if parsed.paid is None else str(parsed.paid),
        "amount": str(parsed.amount), "refund": parsed.refund, "reprint": parsed.reprint,
        "currency": parsed.currency, "template": parsed.template, "sha256": receipt.sha256,
        "ended_by": receipt.ended_by, "text": receipt.text,
    }
    if parsed.items:
        entry["items"] = [{**item, "amount": str(item["amount"])} for item in parsed.items]
    return entry


def cmd_parse(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    template = None
    try:
        known, tz = dict(BUILTIN_TEMPLATES), args.tz
        if args.templates_from:
            site = _site(args.templates_from)
            known.update({t.name: t for t in site.pos.templates})
            tz = tz or site.timezone
        if args.template:
            if args.template not in known:
                print(f"error: no receipt template {args.template!r} (known: {', '.join(sorted(known))})",
                      file=sys.stderr)
                return 1
            template = known[args.template]
        receipts = parse_receipts(data, encoding=args.encoding)
        report = [receipt_report(r, template, tz or "UTC") for r in receipts]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def register(subparsers) -> None:
    pos = subparsers.add_parser("pos", help="POS sales capture tools (receipt printers)")
    sub = pos.add_subparsers(dest="pos_command", required=True)
    parse = sub.add_parser("parse", help="split a capture of ESC/POS printer bytes into receipts and read them (JSON)")
    parse.add_argument("file", help="the captured bytes (what the till sent its printer)")
    parse.add_argument("--template", help="a built-in template (zh, en) or one from --templates-from; "
                                          "default: the built-in ones in turn")
    parse.add_argument("--encoding", default="gb18030",
                       help="the till's text encoding: gb18030 (default), utf-8, big5, euc-kr, cp437, "
                            "euc-kr-via-latin1, ...")
    parse.add_argument("--templates-from", metavar="CONFIG", help="a site config whose pos.templates to use")
    parse.add_argument("--tz", help="time zone of the printed times (default: the site's `timezone` with "
                                    "--templates-from, else UTC)")
    parse.set_defaults(func=cmd_parse)

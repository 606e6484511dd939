"""`gateway` command line: run a site, check its config, print the config schema, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from . import __version__
from . import models_cli
from .access import cli as access_cli
from .ads import cli as ads_cli
from .pos import cli as pos_cli
from .config import ConfigError, config_json_schema, load_config, load_site_config
from .faces import cli as faces_cli
from .vision import replay


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from .app import Gateway

    config = load_site_config(args.config)
    if config is None:
        return 1
    setup_logging(args.log_level or config.log_level)
    gateway = Gateway(config, args.config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gateway.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(gateway)))
        await gateway.run()

    asyncio.run(main())
    return 0


async def _reload(gateway) -> None:
    try:
        await gateway.reload()
    except Exception as exc:  # a bad file on SIGHUP keeps the running config
        logging.getLogger("gateway").error("reload on SIGHUP failed: %s", exc)


def cmd_check_config(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            config = load_config(path)
        except ConfigError as exc:
            print(exc)
            status = 1
            continue
        print(f"{path}: ok (site {config.site_id}, gateway {config.gateway_id}, {len(config.devices)} devices)")
    return status


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from simulator.demo import run_demo

    setup_logging(args.log_level or "warning")
    return run_demo(config_path=Path(args.config), broker=args.broker, duration=args.duration,
                    data_dir=Path(args.data_dir), api_port=args.api_port, browser=not args.no_browser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Per-site edge gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway for one site in the foreground")
    run.add_argument("--config", required=True, help="site config file (YAML)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate config files; exit 1 on any problem")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_check_config)

    schema = sub.add_parser("config-schema", help="print the JSON Schema of the site config (for editors)")
    schema.set_defaults(func=cmd_config_schema)

    models_cli.register(sub)
    replay.register(sub)
    faces_cli.register(sub)
    access_cli.register(sub)
    pos_cli.register(sub)
    ads_cli.register(sub)

    demo = sub.add_parser("demo", help="run a whole simulated site on this machine")
    demo.add_argument("--config", default=str(Path("configs") / "demo-mall.yaml"))
    demo.add_argument("--broker", help="HOST:PORT of an MQTT broker to use instead of the embedded one")
    demo.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--data-dir", default=str(Path("var") / "demo"), help="where the demo keeps its databases")
    demo.add_argument("--api-port", type=int, default=8080, help="gateway HTTP API port (0 picks a free one)")
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    demo.add_argument("--no-browser", action="store_true",
                      help="do not open the atrium screen's web player in headless Chromium (a simulated "
                           "player plays it instead)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)

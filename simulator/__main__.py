"""Command line for the simulator.

    python -m simulator platform --host 127.0.0.1 --port 1883 --db platform.db [--prefix site] [--protocol 5|3.1.1]

runs the platform stand-in until Ctrl-C, printing one line per received message.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from simulator.platform import PlatformStandIn


def run_platform(args: argparse.Namespace) -> int:
    stop_requested = threading.Event()
    # SIGTERM too, so `kill` and process supervisors stop it as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    platform = PlatformStandIn(
        args.host,
        args.port,
        args.db,
        topic_prefix=args.prefix,
        protocol=args.protocol,
        client_id=args.client_id,
        message_log=lambda line: print(line, flush=True),
    )
    try:
        platform.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"platform stand-in listening on {args.host}:{args.port} under {args.prefix}/, storing in {args.db}", flush=True)
    try:
        while not stop_requested.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        platform.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Site edge gateway simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    platform = commands.add_parser("platform", help="run the central-platform stand-in")
    platform.add_argument("--host", default="127.0.0.1")
    platform.add_argument("--port", type=int, default=1883)
    platform.add_argument("--db", default="platform.db", help="SQLite file to store received messages in")
    platform.add_argument("--prefix", default="site", help="topic prefix (default: site)")
    platform.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    platform.add_argument("--client-id", default=None)
    args = parser.parse_args(argv)
    if args.command == "platform":
        return run_platform(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

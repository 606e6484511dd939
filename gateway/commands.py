"""Remote commands from the platform: parse, run once, answer with an ack.

A command arrives on `.../down/{command}` with a JSON body `{"command_id": "...", "args": {...}}`.
Every command is answered on `.../up/ack` with `{command_id, ok, error, result}`, including the
malformed ones (then with `command_id` null when none could be read). A repeated `command_id` (QoS 1
may deliver twice) is answered with the first ack and not run again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections import OrderedDict
from typing import Any, Awaitable, Callable

log = logging.getLogger("gateway.commands")

CommandHandler = Callable[[dict[str, Any]], Awaitable[Any]]
Reply = Callable[[dict], None]

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_COMMAND_ID_LENGTH = 128
REMEMBERED_ACKS = 1000


class CommandError(Exception):
    """Raised by a handler for a refusal that is the caller's fault (bad args, not allowed now)."""


def _ack(command_id: str | None, ok: bool, error: str | None = None, result: Any = None) -> dict:
    return {"command_id": command_id, "ok": ok, "error": error, "result": result}


def parse_command(payload: bytes) -> tuple[str, dict[str, Any]]:
    """(command_id, args) from a downlink body, or ValueError saying what is wrong with it."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    except RecursionError:  # e.g. 100k nested `[`: still well under MAX_PAYLOAD_BYTES
        raise ValueError("payload is nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("payload must be a JSON object")
    command_id = body.get("command_id")
    if not isinstance(command_id, str) or not command_id or len(command_id) > MAX_COMMAND_ID_LENGTH:
        raise ValueError(f"command_id must be a non-empty string of at most {MAX_COMMAND_ID_LENGTH} characters")
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ValueError("args must be a JSON object")
    return command_id, args


def _command_id_if_any(payload: bytes) -> str | None:
    try:
        value = json.loads(payload.decode("utf-8")).get("command_id")
    except Exception:
        return None
    return value if isinstance(value, str) and 0 < len(value) <= MAX_COMMAND_ID_LENGTH else None


class CommandRouter:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 60.0):
        self._loop = loop
        self._handlers: dict[str, CommandHandler] = {}
        self._answered: OrderedDict[str, dict] = OrderedDict()
        self._running: dict[str, concurrent.futures.Future] = {}  # command_id -> its run, until answered
        # dispatch runs in the uplink thread, `answered` in the loop's: the two tables change together.
        self._lock = threading.Lock()
        self.timeout = timeout

    def register(self, name: str, handler: CommandHandler) -> None:
        self._handlers[name] = handler

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def dispatch(self, name: str, payload: bytes, reply: Reply) -> None:
        """Called from the uplink thread; the handler runs on the gateway's loop."""
        try:
            command_id, args = parse_command(payload)
        except ValueError as exc:
            log.warning("malformed %s command: %s", name, exc)
            reply(_ack(_command_id_if_any(payload), False, f"malformed command: {exc}"))
            return
        handler = self._handlers.get(name)
        with self._lock:
            answered_before = self._answered.get(command_id)
            running = self._running.get(command_id)
            if answered_before is None and running is None:
                if handler is None:
                    answered_before = self._remember(
                        _ack(command_id, False, f"unknown command {name!r} (known: {', '.join(self.names)})"))
                else:
                    log.info("command %s (%s)", name, command_id)
                    future = asyncio.run_coroutine_threadsafe(self._run(name, command_id, handler, args), self._loop)
                    self._running[command_id] = future
        if answered_before is not None:
            reply(answered_before)
        elif running is not None:  # redelivered while the first run is still going: answer with its ack
            running.add_done_callback(lambda f: reply(f.result()))
        else:
            def answered(f: concurrent.futures.Future) -> None:
                with self._lock:
                    ack = self._remember(f.result())
                    self._running.pop(command_id, None)
                reply(ack)

            future.add_done_callback(answered)

    async def _run(self, name: str, command_id: str, handler: CommandHandler, args: dict) -> dict:
        try:
            result = await asyncio.wait_for(handler(args), self.timeout)
            return _ack(command_id, True, result=result)
        except CommandError as exc:
            return _ack(command_id, False, str(exc))
        except asyncio.TimeoutError:
            return _ack(command_id, False, f"{name} did not finish within {self.timeout:g}s")
        except Exception as exc:
            log.exception("command %s (%s) failed", name, command_id)
            return _ack(command_id, False, f"{type(exc).__name__}: {exc}")

    def _remember(self, ack: dict) -> dict:
        if ack.get("command_id"):
            self._answered[ack["command_id"]] = ack
            while len(self._answered) > REMEMBERED_ACKS:
                self._answered.popitem(last=False)
        return ack

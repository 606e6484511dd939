"""A member-code scanner next to a till: each scan becomes `pos.member_scan`.

Two ways scanners connect. `input: serial` (USB CDC or RS-232): the scanner sends each code as a
line of text ended by CR, LF or both (9600 8N1 by default). `input: keyboard`: a USB scanner in its
factory "keyboard" mode, which types each code and presses Enter; `port` is then its input device
(`/dev/input/by-id/usb-...-event-kbd`), which the gateway grabs so the keystrokes go nowhere else,
and reads as the text typed (US key layout, Shift respected). Each non-empty line, stripped, becomes an
internal `pos.member_scan` event `{"till": <the till's device id>, "code": <code>}`; the sales
service credits the next receipt of that till to the member. A line longer than 256 characters, or
one that is not printable UTF-8 text, is not a member code: it is dropped with a warning.

The port is served by `drivers.receipt_capture.SerialPump`: unplugged, the device is offline with the
reason and the port is reopened with backoff (`reopen_max`).
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
from typing import Any, Literal

from pydantic import Field

from gateway.events import DEVICE_ID_PATTERN

from .base import DeviceConfig, Driver
from .receipt_capture import SerialEndpoint, SerialLineSettings, SerialPump, open_serial
from .registry import register

MAX_LINE = 256
_LINE_END = re.compile(rb"[\r\n]")

# Linux input events (struct input_event: a timeval, then type, code, value) and the key codes of a
# US keyboard (linux/input-event-codes.h), as a scanner in keyboard mode types them.
INPUT_EVENT = struct.Struct("@llHHi")
EV_KEY = 1
EVIOCGRAB = 0x40044590  # _IOW('E', 0x90, int): this reader alone gets the device's keystrokes
KEY_ENTER, KEY_KPENTER, KEY_LEFTSHIFT, KEY_RIGHTSHIFT = 28, 96, 42, 54
_KEYS = {**dict(zip(range(2, 14), "1234567890-=")), **dict(zip(range(16, 28), "qwertyuiop[]")),
         **dict(zip(range(30, 42), "asdfghjkl;'`")), 43: "\\", **dict(zip(range(44, 54), "zxcvbnm,./")), 57: " ",
         71: "7", 72: "8", 73: "9", 74: "-", 75: "4", 76: "5", 77: "6", 78: "+", 79: "1", 80: "2", 81: "3",
         82: "0", 83: ".", 55: "*", 98: "/"}
_SHIFTED = dict(zip("1234567890-=[];'`\\,./", '!@#$%^&*()_+{}:"~|<>?'))


class KeyboardScanner:
    """A scanner's input device read as the text it types: what SerialPump needs of a port."""

    in_waiting = INPUT_EVENT.size * 64

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.ioctl(self._fd, EVIOCGRAB, 1)
        except OSError:  # not an input device (a pipe in tests) or grabbed already: read it anyway
            pass
        self._pending = b""
        self._shift = 0

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int) -> bytes:
        try:
            data = os.read(self._fd, size)
        except BlockingIOError:
            return b""
        if not data:  # the device went away (unplugged); a pipe's writer closed
            raise OSError("the input device is gone")
        self._pending += data
        whole = len(self._pending) - len(self._pending) % INPUT_EVENT.size
        events, self._pending = self._pending[:whole], self._pending[whole:]
        return "".join(self._key(code, value) for _, _, kind, code, value in INPUT_EVENT.iter_unpack(events)
                       if kind == EV_KEY).encode()

    def _key(self, code: int, value: int) -> str:
        if code in (KEY_LEFTSHIFT, KEY_RIGHTSHIFT):
            self._shift = max(0, self._shift + (1 if value == 1 else -1 if value == 0 else 0))
            return ""
        if value == 0:  # a key released
            return ""
        if code in (KEY_ENTER, KEY_KPENTER):
            return "\n"
        char = _KEYS.get(code, "")
        return (_SHIFTED.get(char, char.upper()) if self._shift else char) if char else ""

    def write(self, data: bytes) -> None:
        raise OSError("a keyboard cannot be written to")

    def close(self) -> None:
        os.close(self._fd)


def open_keyboard(path: str, line: Any) -> KeyboardScanner:
    return KeyboardScanner(path)


class BarcodeScannerSettings(SerialLineSettings):
    kind: Literal["barcode_scanner"]
    port: str = Field(..., min_length=1, description="serial port of the scanner, e.g. /dev/ttyACM0; with "
                                                     "input keyboard, its input device")
    input: Literal["serial", "keyboard"] = Field("serial", description="serial: lines on a serial port; "
                                                 "keyboard: a USB scanner in keyboard mode")
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(9600, description="bits per second")
    till: str = Field(..., pattern=DEVICE_ID_PATTERN.pattern,
                      description="device id of the till (its pos_* device) whose receipts the scans belong to")


class LineSplitter:
    """Bytes in, stripped non-empty lines out (CR or LF ends a line); overlong lines are dropped."""

    def __init__(self, on_line: Any, log: Any, max_line: int = MAX_LINE):
        self.on_line = on_line
        self.log = log
        self.max_line = max_line
        self._buffer = bytearray()
        self._overflow = False  # the current line is over max_line: skip to its end

    def feed(self, data: bytes) -> None:
        start = 0
        for match in _LINE_END.finditer(data):
            self._take(data[start:match.start()])
            self._end_line()
            start = match.end()
        self._take(data[start:])

    def _take(self, chunk: bytes) -> None:
        if self._overflow or not chunk:
            return
        self._buffer += chunk
        if len(self._buffer) > self.max_line:
            self.log.warning("scanner line over %d bytes dropped", self.max_line)
            self._buffer.clear()
            self._overflow = True

    def _end_line(self) -> None:
        raw, overflow = bytes(self._buffer), self._overflow
        self._buffer.clear()
        self._overflow = False
        if overflow:
            return
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.log.warning("scanner line that is not UTF-8 text dropped (%d bytes)", len(raw))
            return
        if not line:
            return
        if not line.isprintable():
            self.log.warning("scanner line with control characters dropped (%d bytes)", len(raw))
            return
        self.on_line(line)


@register
class BarcodeScannerDriver(Driver):
    kind = "barcode_scanner"
    Settings = BarcodeScannerSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        self.pump: SerialPump | None = None

    def _scanned(self, code: str) -> None:
        self.ctx.emit("pos.member_scan", {"till": self.settings.till, "code": code},  # type: ignore[attr-defined]
                      internal=True)

    async def run(self) -> None:
        settings: BarcodeScannerSettings = self.settings  # type: ignore[assignment]
        splitter = LineSplitter(self._scanned, self.ctx.log)
        opener = open_keyboard if settings.input == "keyboard" else open_serial
        self.pump = SerialPump(self.ctx, settings, SerialEndpoint("scanner port", settings.port), splitter.feed,
                               opener=opener)
        await self.pump.run(interval=0.5)

"""LED text signs speaking the Alpha Sign Communications Protocol (device kind `led_sign`).

Alpha, BetaBrite and the many compatible LED message signs (Adaptive Micro Systems / Alpha American,
"Alpha Protocol", also called M-Protocol) take a message as one packet on a serial line. The gateway
only ever writes the sign's TEXT file; nothing is read back. The packet, as the driver sends it
(Alpha 1.0 "standard transmission packet", one command, with the optional checksum):

    NUL x5  SOH  type  address  STX  "A"  label  ESC  position  mode  text  ETX  checksum  EOT

- `NUL x5` (0x00): lets the sign find the baud rate (autobaud) and the start of a packet;
- `SOH` (0x01), the sign type code (one character: "Z" all signs) and the address (two ASCII hex
  digits: "00" every sign on the line);
- `STX` (0x02), command code "A" (write TEXT file), the file label (one character: "A" by default;
  "0" is the priority TEXT file, which needs no memory set-up and overrides every other file);
- `ESC` (0x1B), the display position (" " middle line, '"' top, "&" bottom, "0" fill, "1" left,
  "2" right) and the mode code ("a" rotate, "b" hold, ...; the special modes are "n" and one more
  character: "n0" twinkle, ...), then the text;
- `ETX` (0x03) and the checksum: the 16-bit sum of every byte from STX to ETX inclusive, as four
  upper-case ASCII hex digits; `EOT` (0x04) ends the packet.

For "HELLO", rotating, on the middle line of every sign:

    00 00 00 00 00 01 5A 30 30 02 41 41 1B 20 61 48 45 4C 4C 4F 03 30 32 39 37 04
    (sum 02+41+41+1B+20+61+48+45+4C+4C+4F+03 = 0x0297: "0297")

Text: the Alpha protocol subset used here carries printable ASCII only (0x20-0x7E). The text is
normalised first (NFKC: full-width "ＡＢＣ１２３" becomes "ABC123"; accents are dropped: "é" becomes
"e"), line ends and tabs become spaces, and every other character (Chinese among them) becomes "?".
Signs that show Chinese exist, but they use vendors' own extensions (GB2312 fonts, other protocols),
not this subset. The text is cut to `max_chars` (125 by default: the size of the priority file).

The driver: `show(text, mode=None)` (from the event loop; never blocks) puts the packet in the queue
of the serial thread, which writes it; it answers False when the sign's port is not open. The driver
keeps the last text it was asked to show and sends it again whenever the port (re)opens, so a sign
that was unplugged or power-cycled shows the right message again, and a message given while the sign
was away appears when it comes back. The port is served by `drivers.receipt_capture.SerialPump`
(reopened with backoff up to `reopen_max`); the device is online while the port is open. The driver
subscribes to nothing: a service calls `show`.

Serial settings differ between sign models and their set-up menus: 9600 baud 8N1 is the default here
(BetaBrite and most Alpha signs as shipped); Alpha's own examples also use 7 data bits, even parity
(7E1, 7E2): set `bytesize`, `parity`, `stopbits` to the sign's.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from .base import DeviceConfig, Driver
from .receipt_capture import SerialEndpoint, SerialLineSettings, SerialPump, open_serial
from .registry import register

NUL, SOH, STX, ETX, EOT, ESC = b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x1b"
SYNC = NUL * 5
WRITE_TEXT = "A"
MAX_PACKET = 8192  # a packet longer than this between SOH and EOT is noise: dropped

# Display modes (Alpha protocol, "Mode Field" table). Special modes are "n" + one character.
MODES: dict[str, str] = {
    "rotate": "a", "hold": "b", "flash": "c",
    "roll_up": "e", "roll_down": "f", "roll_left": "g", "roll_right": "h",
    "wipe_up": "i", "wipe_down": "j", "wipe_left": "k", "wipe_right": "l",
    "scroll": "m", "auto": "o",
    "roll_in": "p", "roll_out": "q", "wipe_in": "r", "wipe_out": "s",
    "compressed_rotate": "t",  # only some sign models
    "twinkle": "n0", "sparkle": "n1", "snow": "n2", "interlock": "n3", "switch": "n4",
    "spray": "n6", "starburst": "n7", "welcome": "n8", "slot_machine": "n9",
}
MODE_NAMES = {code: name for name, code in MODES.items()}
ModeName = Literal["rotate", "hold", "flash", "roll_up", "roll_down", "roll_left", "roll_right", "wipe_up",
                   "wipe_down", "wipe_left", "wipe_right", "scroll", "auto", "roll_in", "roll_out", "wipe_in",
                   "wipe_out", "compressed_rotate", "twinkle", "sparkle", "snow", "interlock", "switch", "spray",
                   "starburst", "welcome", "slot_machine"]

# Display positions (the character after ESC).
POSITIONS: dict[str, str] = {"middle": " ", "top": '"', "bottom": "&", "fill": "0", "left": "1", "right": "2"}
POSITION_NAMES = {code: name for name, code in POSITIONS.items()}
PositionName = Literal["middle", "top", "bottom", "fill", "left", "right"]

DEFAULT_MAX_CHARS = 125


# ------------------------------------------------------------------------------------ encoding


def sanitise_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """What the sign can show of `text`: printable ASCII, whitespace as spaces, others "?", capped."""
    folded = unicodedata.normalize("NFKC", text)
    out = []
    for char in folded:
        if " " <= char <= "~":
            out.append(char)
        elif char in "\r\n\t\v\f" or unicodedata.category(char) == "Zs":
            out.append(" ")
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if len(base) == 1 and " " <= base <= "~" else "?")
    return "".join(out)[:max_chars]


def checksum(block: bytes) -> bytes:
    """The Alpha checksum of STX ... ETX (both included): their 16-bit sum as four upper-case hex digits."""
    return b"%04X" % (sum(block) & 0xFFFF)


def _check_address(address: str) -> str:
    if len(address) != 2 or any(c not in "0123456789abcdefABCDEF" for c in address):
        raise ValueError(f"address {address!r}: two hex digits, e.g. 00 (every sign) or 01")
    return address.upper()


def _check_char(value: str, what: str) -> str:
    if len(value) != 1 or not " " <= value <= "~":
        raise ValueError(f"{what} {value!r}: one printable ASCII character")
    return value


def mode_code(mode: str) -> str:
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"unknown sign mode {mode!r}; known: {', '.join(MODES)}") from None


def position_code(position: str) -> str:
    try:
        return POSITIONS[position]
    except KeyError:
        raise ValueError(f"unknown sign position {position!r}; known: {', '.join(POSITIONS)}") from None


def encode_text_frame(text: str, *, address: str = "00", type_code: str = "Z", file_label: str = "A",
                      mode: str = "rotate", position: str = "middle", max_chars: int = DEFAULT_MAX_CHARS) -> bytes:
    """One Alpha packet writing `text` (sanitised, capped at `max_chars`) to the TEXT file `file_label`,
    with the checksum. ValueError for a bad address, type code, label, mode or position."""
    address = _check_address(address)
    _check_char(type_code, "type code")
    _check_char(file_label, "file label")
    if file_label == "?":
        raise ValueError("file label '?' is the protocol's wildcard")
    body = (STX + (WRITE_TEXT + file_label).encode("ascii") + ESC
            + (position_code(position) + mode_code(mode)).encode("ascii")
            + sanitise_text(text, max_chars).encode("ascii") + ETX)
    return SYNC + SOH + (type_code + address).encode("ascii") + body + checksum(body) + EOT


# ------------------------------------------------------------------------------------ decoding


@dataclass(frozen=True)
class Frame:
    """One command of a packet as a sign reads it."""

    type_code: str
    address: str
    command: str  # "A": write TEXT file
    data: bytes  # what follows the command code (before ETX)
    checksum: str | None  # the four hex digits sent; None for a packet sent without a checksum
    file_label: str | None = None  # write TEXT only, from here on
    position: str | None = None  # a POSITIONS name, or the raw character if unknown; None if not given
    mode: str | None = None  # a MODES name, or the raw code if unknown; None if not given
    text: str | None = None


def _parse_text_command(data: bytes) -> dict[str, Any]:
    """Label, position, mode, text of a write TEXT command's data. ValueError if malformed."""
    if not data:
        raise ValueError("write TEXT without a file label")
    label = chr(data[0])
    rest = data[1:]
    position = mode = None
    if rest[:1] == ESC:
        if len(rest) < 3:
            raise ValueError("ESC without position and mode")
        position = POSITION_NAMES.get(chr(rest[1]), chr(rest[1]))
        code = chr(rest[2])
        size = 3
        if code == "n":
            if len(rest) < 4:
                raise ValueError("special mode n without its character")
            code += chr(rest[3])
            size = 4
        mode = MODE_NAMES.get(code, code)
        rest = rest[size:]
    return {"file_label": label, "position": position, "mode": mode, "text": rest.decode("latin-1")}


def _parse_packet(packet: bytes) -> list[Frame]:
    """The commands of one packet (the bytes after SOH, before EOT). ValueError if malformed or a
    checksum does not match: the sign drops the whole packet then."""
    if len(packet) < 4 or packet[3:4] != STX:
        raise ValueError("no type code, address and STX after SOH")
    type_code, address = chr(packet[0]), packet[1:3].decode("latin-1")
    frames = []
    rest = packet[3:]
    while rest:
        if rest[:1] != STX:
            raise ValueError("bytes between commands")
        end = rest.find(ETX)
        if end < 0:  # the last (or only) command without ETX and checksum
            block, sent, rest = rest, None, b""
        else:
            block, sent, rest = rest[:end + 1], rest[end + 1:end + 5], rest[end + 5:]
            if len(sent) != 4 or sent.upper() != checksum(block):
                raise ValueError(f"checksum {sent!r} does not match {checksum(block)!r}")
        inner = block[1:-1] if block.endswith(ETX) else block[1:]
        if STX in inner or not inner:
            raise ValueError("empty or broken command")
        command, data = chr(inner[0]), inner[1:]
        fields = _parse_text_command(data) if command == WRITE_TEXT else {}
        frames.append(Frame(type_code, address, command, data,
                            sent.decode("latin-1").upper() if sent is not None else None, **fields))
    return frames


class FrameDecoder:
    """Packets out of a byte stream split anywhere, as a sign reads its line.

    Anything outside SOH ... EOT is ignored (sync NULs, noise). A packet that is malformed, fails its
    checksum, is cut short by a new SOH, or grows past MAX_PACKET is dropped and counted in `rejected`.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_packet = False
        self.rejected = 0

    def reset(self) -> None:
        self._buffer.clear()
        self._in_packet = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for byte in data:  # signs run at 9600 baud: a byte loop is plenty
            if byte == SOH[0]:
                if self._in_packet and self._buffer:
                    self.rejected += 1  # a packet cut short by the next one
                self._buffer.clear()
                self._in_packet = True  # repeated SOHs (SOH sync) just start over
            elif not self._in_packet:
                continue
            elif byte == EOT[0]:
                packet = bytes(self._buffer)
                self.reset()
                try:
                    frames.extend(_parse_packet(packet))
                except ValueError:
                    self.rejected += 1
            else:
                self._buffer.append(byte)
                if len(self._buffer) > MAX_PACKET:
                    self.rejected += 1
                    self.reset()
        return frames


def decode_frames(data: bytes) -> list[Frame]:
    """Every well-formed command in `data` whose checksum (if sent) matches; garbage is skipped."""
    return FrameDecoder().feed(data)


# ------------------------------------------------------------------------------------- driver


class LedSignSettings(SerialLineSettings):
    kind: Literal["led_sign"]
    port: str = Field(..., min_length=1, description="serial port of the sign, e.g. /dev/ttyUSB0")
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(9600, description="bits per second")
    address: str = Field("00", description="the sign's address: two hex digits; 00 reaches every sign on the line")
    type_code: str = Field("Z", min_length=1, max_length=1, description="sign type code; Z: every type")
    file_label: str = Field("A", min_length=1, max_length=1,
                            description="TEXT file written; 0 is the priority file (no memory set-up needed)")
    mode: ModeName = Field("rotate", description="display mode when show() names none")
    position: PositionName = Field("middle", description="display position (line) of the text")
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=1, le=1024, description="longest text sent; longer is cut")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("type_code")
    @classmethod
    def _type_code(cls, value: str) -> str:
        return _check_char(value, "type code")

    @field_validator("file_label")
    @classmethod
    def _file_label(cls, value: str) -> str:
        _check_char(value, "file label")
        if value == "?":
            raise ValueError("file label '?' is the protocol's wildcard")
        return value


class SignPump(SerialPump):
    """A SerialPump that also writes queued packets to the port from its thread, and re-sends the
    last packet each time the port opens."""

    def __init__(self, ctx: Any, line: SerialLineSettings, main: SerialEndpoint, **kwargs: Any):
        super().__init__(ctx, line, main, self._reply, **kwargs)
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        self._last: bytes | None = None
        self.written = 0  # packets written to the port

    @property
    def is_open(self) -> bool:
        return self.main.handle is not None

    def send(self, packet: bytes) -> bool:
        """Make `packet` the one to show; write it now if the port is open (True), else when it opens."""
        with self._lock:
            self._last = packet
            if not self.is_open:
                return False
            self._queue.append(packet)
            return True

    def _reply(self, data: bytes) -> None:  # signs with ACK/NAK on answer; nothing is expected
        self.ctx.log.debug("%d bytes from the sign ignored", len(data))

    def _open(self, endpoint: SerialEndpoint) -> None:
        super()._open(endpoint)
        if endpoint is self.main and endpoint.handle is not None:
            with self._lock:
                self._queue.clear()
                if self._last is not None:
                    self._queue.append(self._last)

    def _step(self) -> None:
        while self.main.handle is not None:
            with self._lock:
                if not self._queue:
                    break
                packet = self._queue.popleft()
            self._write(self.main, packet)
            if self.main.handle is not None:
                self.written += 1
        super()._step()


@register
class LedSignDriver(Driver):
    kind = "led_sign"
    Settings = LedSignSettings

    def __init__(self, settings: DeviceConfig, ctx: Any, opener: Any = open_serial):
        super().__init__(settings, ctx)
        s: LedSignSettings = settings  # type: ignore[assignment]
        self.pump = SignPump(ctx, s, SerialEndpoint("sign port", s.port), opener=opener)
        self.last: tuple[str, str] | None = None  # (sanitised text, mode) last asked for

    def encode(self, text: str, mode: str | None = None) -> bytes:
        s: LedSignSettings = self.settings  # type: ignore[assignment]
        return encode_text_frame(text, address=s.address, type_code=s.type_code, file_label=s.file_label,
                                 mode=mode or s.mode, position=s.position, max_chars=s.max_chars)

    def show(self, text: str, mode: str | None = None) -> bool:
        """Show `text` on the sign (`mode`: a MODES name; the configured one if None). Never blocks:
        the serial thread writes it. False if the port is not open now; the text is shown once it
        opens. ValueError for an unknown mode."""
        s: LedSignSettings = self.settings  # type: ignore[assignment]
        mode = mode or s.mode
        packet = self.encode(text, mode)
        self.last = (sanitise_text(text, s.max_chars), mode)
        return self.pump.send(packet)

    async def run(self) -> None:
        await self.pump.run(interval=0.5)

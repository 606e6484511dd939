"""Wiegand card frames, as OSDP card reads deliver them: a bit count and the bits MSB-first.

The first bit sent on the wire is the most significant bit of `data[0]`; the frame occupies the
first `bits` bits of `data` and the bits after it in the last byte are padding (ignored). `data`
must be exactly `ceil(bits / 8)` bytes long, as OSDP sends it.

Layouts decoded (bit 0 is the first bit on the wire):

- 26 bits, HID H10301: bit 0 even parity over bits 1-12; bits 1-8 facility code (0-255);
  bits 9-24 card number (0-65535); bit 25 odd parity over bits 13-24.
- 34 bits, the common HID 34-bit layout (H10306): bit 0 even parity over bits 1-16; bits 1-16
  facility code (0-65535); bits 17-32 card number (0-65535); bit 33 odd parity over bits 17-32.

A 26- or 34-bit frame whose parity is wrong is refused (`WiegandError`): a bad read must never be
looked up, since a misread could match somebody else's card. Every other length is passed through
raw: the site's platform may know formats the gateway does not.

The canonical value (`WiegandCard.value`) is what credentials are looked up by:
`h10301:<facility>:<card>`, `w34:<facility>:<card>`, `raw:<bits>:<hex>` (decimal numbers without
leading zeros; hex lowercase, the frame's bytes with the padding bits cleared).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_BITS = 1024  # far above any card format; bounds the work a malformed read can cause

WiegandFormat = Literal["h10301", "w34", "raw"]


class WiegandError(ValueError):
    """A frame that cannot be a card read: bad parity, wrong length, impossible bit count."""


@dataclass(frozen=True, slots=True)
class WiegandCard:
    """A decoded card read. `facility` and `card` are None for raw frames."""

    format: WiegandFormat
    bits: int
    value: str  # canonical credential value, see the module docstring
    facility: int | None = None
    card: int | None = None
    kind: str = "card"


def _frame_int(bits: int, data: bytes) -> int:
    """The frame as an int of exactly `bits` bits (bit 0 of the frame is its most significant bit)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise WiegandError(f"bit count must be an integer from 1 to {MAX_BITS}, got {bits!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WiegandError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    expected = (bits + 7) // 8
    if len(data) != expected:
        raise WiegandError(f"{bits} bits need {expected} bytes, got {len(data)}")
    return int.from_bytes(data, "big") >> (expected * 8 - bits)


def _ones(value: int) -> int:
    return value.bit_count()


def _field(frame: int, bits: int, first: int, count: int) -> int:
    """Bits first..first+count-1 of a `bits`-long frame (bit 0 = most significant)."""
    return (frame >> (bits - first - count)) & ((1 << count) - 1)


def _check_parity(frame: int, bits: int, half: int) -> None:
    """Leading even parity over bits 1..half, trailing odd parity over bits half+1..bits-2."""
    leading = _field(frame, bits, 0, 1)
    trailing = _field(frame, bits, bits - 1, 1)
    first_half = _field(frame, bits, 1, half)
    second_half = _field(frame, bits, 1 + half, bits - 2 - half)
    if (_ones(first_half) + leading) % 2 != 0:
        raise WiegandError(f"{bits}-bit frame: leading even parity does not match")
    if (_ones(second_half) + trailing) % 2 != 1:
        raise WiegandError(f"{bits}-bit frame: trailing odd parity does not match")


def decode(bits: int, data: bytes) -> WiegandCard:
    """The card in a frame; WiegandError (and nothing else) for anything that is not one."""
    frame = _frame_int(bits, data)
    if bits == 26:
        _check_parity(frame, 26, 12)
        facility, card = _field(frame, 26, 1, 8), _field(frame, 26, 9, 16)
        return WiegandCard("h10301", 26, f"h10301:{facility}:{card}", facility, card)
    if bits == 34:
        _check_parity(frame, 34, 16)
        facility, card = _field(frame, 34, 1, 16), _field(frame, 34, 17, 16)
        return WiegandCard("w34", 34, f"w34:{facility}:{card}", facility, card)
    return WiegandCard("raw", bits, raw_value(bits, data))


def raw_value(bits: int, data: bytes) -> str:
    """`raw:<bits>:<hex>` for any frame, padding bits cleared so equal frames give equal values."""
    frame = _frame_int(bits, data)
    size = (bits + 7) // 8
    return f"raw:{bits}:{(frame << (size * 8 - bits)).to_bytes(size, 'big').hex()}"


def _with_parity(payload: int, bits: int, half: int) -> int:
    """A `bits`-long frame around `payload` (bits-2 bits), with the parities of `_check_parity`."""
    first_half = payload >> (bits - 2 - half)
    second_half = payload & ((1 << (bits - 2 - half)) - 1)
    leading = _ones(first_half) % 2
    trailing = 1 - _ones(second_half) % 2
    return (leading << (bits - 1)) | (payload << 1) | trailing


def _to_bytes(frame: int, bits: int) -> bytes:
    size = (bits + 7) // 8
    return (frame << (size * 8 - bits)).to_bytes(size, "big")


def encode_h10301(facility: int, card: int) -> tuple[int, bytes]:
    """(26, data) for a facility code 0-255 and card number 0-65535, as a reader would send it."""
    if not 0 <= facility <= 0xFF or not 0 <= card <= 0xFFFF:
        raise ValueError("H10301 needs facility 0-255 and card 0-65535")
    return 26, _to_bytes(_with_parity((facility << 16) | card, 26, 12), 26)


def encode_w34(facility: int, card: int) -> tuple[int, bytes]:
    """(34, data) for a facility code 0-65535 and card number 0-65535 (HID 34-bit layout)."""
    if not 0 <= facility <= 0xFFFF or not 0 <= card <= 0xFFFF:
        raise ValueError("34-bit needs facility 0-65535 and card 0-65535")
    return 34, _to_bytes(_with_parity((facility << 16) | card, 34, 16), 34)


def value_from_card_read(read: dict) -> str:
    """The canonical value of a `access.card_read` event's data (drivers/osdp.py).

    `{"format": "wiegand", "bits": n, "data": hex}` is decoded (parity checked), `"raw"` (the reader
    did not say Wiegand) is passed through as `raw:<bits>:<hex>`, `"ascii"` becomes `ascii:<hex>`.
    Anything else is a WiegandError.
    """
    try:
        fmt, data = read["format"], bytes.fromhex(read["data"])
        bits = read.get("bits")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WiegandError(f"not a card read: {exc!r}") from None
    if fmt == "wiegand":
        return decode(bits, data).value
    if fmt == "raw":
        return raw_value(bits, data)
    if fmt == "ascii" and data:
        return f"ascii:{data.hex()}"
    raise WiegandError(f"unknown card read format {fmt!r}")

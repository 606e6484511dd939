"""Build ESC/POS receipts as a till would send them: for tests, benchmarks and the till simulator.

`build_receipt(lines, ...)` gives the bytes of one receipt: `ESC @`, an optional logo, the lines
(GB18030 lines in Chinese mode, `FS &` ... `FS .`, when the encoding is a Chinese one), optional QR
code and barcode, and a cut. The pieces are public too (`raster_logo`, `qr_code`, `barcode`, `CUTS`)
so a test can put together a stream of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

ESC, GS, FS = b"\x1b", b"\x1d", b"\x1c"
INIT = ESC + b"@"
CHINESE_ON, CHINESE_OFF = FS + b"&", FS + b"."

# Every form of paper cut the parser knows, by name.
CUTS: dict[str, bytes] = {
    "full": GS + b"V\x00",
    "partial": GS + b"V\x01",
    "full-ascii": GS + b"V0",
    "partial-ascii": GS + b"V1",
    "feed-full": GS + b"VA\x03",          # m 65: feed n, then cut
    "feed-partial": GS + b"VB\x03",       # m 66
    "position-full": GS + b"Va\x00",      # m 97: feed to the cut position, then cut
    "position-partial": GS + b"Vb\x00",   # m 98
    "reserve-full": GS + b"Vg\x05",       # m 103: reserve the cut
    "reserve-partial": GS + b"Vh\x05",    # m 104
    "esc-i": ESC + b"i",
    "esc-m": ESC + b"m",
}
DRAWER_KICK = ESC + b"p\x000<"


def _pattern(count: int, seed: int = 0x5A) -> bytes:
    """Image bytes that include every troublesome value (NUL, LF, ESC, GS, FS, printable ASCII)."""
    return bytes((seed + k * 37) & 0xFF for k in range(count))


def raster_logo(width_bytes: int = 32, height: int = 48) -> bytes:
    """`GS v 0` raster image, `width_bytes * 8` dots wide."""
    return (GS + b"v0\x00" + width_bytes.to_bytes(2, "little") + height.to_bytes(2, "little")
            + _pattern(width_bytes * height))


def bit_image_logo(dots: int = 128, stripes: int = 3, mode: int = 33) -> bytes:
    """`ESC *` bit image in 24-dot stripes (mode 32/33: three bytes a column; 0/1: one)."""
    per_column = 3 if mode in (32, 33) else 1
    stripe = ESC + b"*" + bytes([mode]) + dots.to_bytes(2, "little") + _pattern(dots * per_column, 0x1B)
    return (stripe + b"\n") * stripes


def graphics_logo(width: int = 64, height: int = 32) -> bytes:
    """`GS ( L` raster graphics stored to the buffer, then printed (`GS ( L` fn 50)."""
    data = b"0p0\x01\x011" + width.to_bytes(2, "little") + height.to_bytes(2, "little")
    data += _pattern((width + 7) // 8 * height, 0x1D)
    return (GS + b"(L" + len(data).to_bytes(2, "little") + data
            + GS + b"(L\x02\x0002")


def qr_code(content: str | bytes, size: int = 6) -> bytes:
    """`GS ( k` QR code: model, module size, error correction, store the data, print."""
    data = content.encode("utf-8") if isinstance(content, str) else content

    def fn(payload: bytes) -> bytes:
        return GS + b"(k" + len(payload).to_bytes(2, "little") + payload

    return (fn(b"1A2\x00") + fn(b"1C" + bytes([size])) + fn(b"1E0")
            + fn(b"1P0" + data) + fn(b"1Q0"))


def barcode(content: str, form: str = "length") -> bytes:
    """`GS k` barcode: `form="length"` is m 73 (CODE128, length-prefixed), `"nul"` is m 4 (CODE39,
    NUL-terminated)."""
    data = content.encode("ascii")
    setup = GS + b"h\x50" + GS + b"w\x02" + GS + b"H\x02"
    if form == "nul":
        return setup + GS + b"k\x04" + data + b"\x00"
    data = b"{B" + data
    return setup + GS + b"kI" + bytes([len(data)]) + data


def build_receipt(lines: Sequence[str], encoding: str = "gb18030", *, logo: bool | str = True,
                  qr: str | None = None, barcode_data: str | None = None, barcode_form: str = "length",
                  cut: bool | str = True, init: bool = True, drawer_kick: bool = False) -> bytes:
    """One receipt's bytes.

    lines: the printed lines (text, without newlines). encoding: the till's text encoding; with a
    Chinese one (gb18030, gbk, gb2312) the lines are sent in Chinese mode (`FS &` ... `FS .`).
    logo: True or "raster" (`GS v 0`), "bitimage" (`ESC *`), "graphics" (`GS ( L`), False for none.
    qr / barcode_data: add a QR code (`GS ( k`) / barcode (`GS k`, `barcode_form` "length" or
    "nul") after the lines. cut: True (partial `GS V 1`), a key of `CUTS`, or False (no cut: the
    parser ends it on `ESC @` or idle). init: start with `ESC @`. drawer_kick: `ESC p` after the cut.
    """
    out = bytearray(INIT if init else b"")
    chinese = encoding.lower().replace("-", "").replace("_", "") in ("gb18030", "gbk", "gb2312")
    if logo:
        out += ESC + b"a\x01"
        kind = "raster" if logo is True else logo
        out += {"raster": raster_logo, "bitimage": bit_image_logo, "graphics": graphics_logo}[kind]()
        out += ESC + b"a\x00"
    if chinese:
        out += CHINESE_ON
    for k, line in enumerate(lines):
        if k == 0:
            out += ESC + b"!\x30" + GS + b"!\x11"
        out += line.encode(encoding, "replace")
        out += b"\n"
        if k == 0:
            out += ESC + b"!\x00" + GS + b"!\x00"
    if chinese:
        out += CHINESE_OFF
    if qr is not None:
        out += ESC + b"a\x01" + qr_code(qr) + b"\n" + ESC + b"a\x00"
    if barcode_data is not None:
        out += barcode(barcode_data, barcode_form) + b"\n"
    out += ESC + b"d\x03"
    if cut:
        out += CUTS["partial" if cut is True else cut]
    if drawer_kick:
        out += DRAWER_KICK
    return bytes(out)

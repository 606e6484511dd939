"""ESC/POS receipt streams: split the bytes a till sends its printer into receipts, and their text.

`EscPosStream` is a resumable state machine. It knows the argument length of every ESC, GS, FS and
DLE command a receipt printer takes (fixed arguments, `pL pH` and 4-byte lengths, width x height
images, NUL-terminated and length-prefixed barcodes, user characters and stored logos) and consumes
binary payloads without ever turning them into text. Only the bytes between commands are text.

Text decoding follows the printer's state, reset by `ESC @`:

- Chinese (kanji) mode, `FS &` on / `FS .` off: text is double-byte, decoded with the till's
  encoding when that is a CJK one (gb18030, gbk, big5, euc-kr, shift_jis, ...), else GB18030. A
  till configured with a CJK encoding starts in Chinese mode, as Chinese printers do.
- Outside Chinese mode, the code page chosen with `ESC t n` (`CODE_PAGES`; an unknown `n` falls back
  to the till's encoding). With no `ESC t`, the till's encoding if it is a single-byte one, else the
  printer's default code page 0 (cp437).
- `utf-8` and `euc-kr-via-latin1` tills ignore both: their text bytes are what the encoding says.
  `euc-kr-via-latin1` undoes a POS application that wrote EUC-KR text as Latin-1 characters and sent
  them as UTF-8 (decode UTF-8, encode Latin-1, decode EUC-KR).

Receipt boundaries: a paper cut (`GS V` in all its forms, `ESC i`, `ESC m`; the cut belongs to the
receipt), `ESC @` once the receipt has text (the `ESC @` starts the next receipt), `idle_timeout`
seconds without bytes (`poll`, or the next `feed`), `max_receipt_bytes` (ended_by "size"), and
`flush`. Bytes that print no text (a drawer kick after the cut, status requests) make no receipt.

Data may be split anywhere, even inside a command or a multi-byte character: the receipts are the
same whatever the split. Memory is bounded by `max_receipt_bytes`. Nothing here raises on input.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import time
from dataclasses import dataclass

__all__ = ["CODE_PAGES", "EscPosStream", "RawReceipt", "parse_receipts"]

# ESC t n -> Python codec (Epson's numbering). 255 (a blank user page) and anything unknown fall back
# to the till's configured encoding.
CODE_PAGES: dict[int, str] = {
    0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865",
    13: "cp857", 14: "cp737", 15: "iso8859_7", 16: "cp1252", 17: "cp866", 18: "cp852",
    19: "cp858", 40: "iso8859_15", 45: "cp1250", 46: "cp1251", 47: "cp1253", 48: "cp1254",
    49: "cp1255", 50: "cp1256", 51: "cp1257", 52: "cp1258",
}

VIA_LATIN1 = "euc-kr-via-latin1"
_CJK = {"gb18030", "gbk", "gb2312", "hz", "big5", "big5hkscs", "cp950", "euc_kr", "cp949", "johab",
        "shift_jis", "cp932", "euc_jp", "shift_jisx0213", "euc_jis_2004", "shift_jis_2004"}
_FIXED = {"utf_8", "utf_8_sig", VIA_LATIN1}

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
_TEXT = re.compile(rb"[^\x00-\x1f]+")
# Decoded text keeps no control characters (C0, DEL, C1).
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])

# Commands with fixed arguments: second byte -> number of argument bytes after it.
_ESC_ARGS = {
    0x0C: 0, 0x20: 1, 0x21: 1, 0x24: 2, 0x25: 1, 0x2D: 1, 0x32: 0, 0x33: 1, 0x3C: 0, 0x3D: 1,
    0x3F: 1, 0x42: 2, 0x45: 1, 0x47: 1, 0x4B: 1, 0x4C: 0, 0x4D: 1, 0x52: 1, 0x53: 0, 0x54: 1,
    0x55: 1, 0x56: 1, 0x57: 8, 0x5C: 2, 0x61: 1, 0x63: 2, 0x65: 1, 0x66: 2, 0x70: 3, 0x72: 1,
    0x75: 1, 0x76: 0, 0x7B: 1,
}
_GS_ARGS = {
    0x21: 1, 0x24: 2, 0x2F: 1, 0x3A: 0, 0x42: 1, 0x45: 1, 0x48: 1, 0x49: 1, 0x4C: 2, 0x50: 2,
    0x54: 1, 0x57: 2, 0x5A: 1, 0x5C: 2, 0x5E: 3, 0x61: 1, 0x62: 1, 0x63: 0, 0x66: 1, 0x67: 4,
    0x68: 1, 0x6A: 1, 0x72: 1, 0x77: 1, 0x7A: 3,
}
_FS_ARGS = {0x21: 1, 0x2D: 1, 0x3F: 2, 0x43: 1, 0x53: 2, 0x57: 1, 0x70: 2}
_DLE_DC4_ARGS = {1: 2, 2: 2, 3: 5, 7: 1, 8: 7}
_NUL_CAP = 256          # GS k m 0-6 and ESC D: data up to a NUL, never more than this
_KANJI_CHAR_BYTES = 72  # FS 2 c1 c2: one 24x24 user-defined kanji


@dataclass(frozen=True)
class RawReceipt:
    data: bytes   # the receipt's raw bytes, from its first byte to the boundary
    text: str     # decoded printable text, lines joined by "\n", trailing spaces stripped
    ended_by: str  # "cut" | "init" | "idle" | "flush" | "size"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def normalise_encoding(name: str) -> str:
    """The codec name for a till's `encoding` setting; ValueError for an unknown one."""
    if str(name).strip().lower().replace("_", "-") == VIA_LATIN1:
        return VIA_LATIN1
    try:
        return codecs.lookup(str(name)).name.replace("-", "_")
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (e.g. utf-8, gb18030, big5, euc-kr, cp437, "
                         f"{VIA_LATIN1})") from None


def _decode(data: bytes, codec: str) -> str:
    if codec == VIA_LATIN1:
        data = data.decode("utf-8", "replace").encode("latin-1", "replace")
        codec = "euc_kr"
    return data.decode(codec, "replace").translate(_CONTROLS)


class EscPosStream:
    """Feed it a till's printer bytes as they come; it hands back each receipt once it has ended."""

    def __init__(self, encoding: str = "gb18030", idle_timeout: float = 5.0,
                 max_receipt_bytes: int = 1 << 20):
        self.encoding = normalise_encoding(encoding)
        self.idle_timeout = float(idle_timeout)
        self.max_receipt_bytes = max(64, int(max_receipt_bytes))
        self._fixed = self.encoding in _FIXED
        self._cjk = self.encoding in _CJK
        self._last: float | None = None
        self._reset_parse()
        self._reset_printer()
        self._reset_receipt()

    # -- public -------------------------------------------------------------------------------

    def feed(self, data: bytes, now: float | None = None) -> list[RawReceipt]:
        """The receipts these bytes complete (and the pending one first if it had gone idle)."""
        now = time.monotonic() if now is None else now
        out: list[RawReceipt] = []
        try:
            if self._last is not None and now - self._last >= self.idle_timeout:
                self._idle(out)
            if data:
                self._last = now
                self._process(bytes(data), out)
        except Exception:  # noqa: BLE001 - never: a bug here must not take the till's capture down
            self._reset_parse()
            self._reset_receipt()
        return out

    def poll(self, now: float | None = None) -> list[RawReceipt]:
        """The pending receipt, if no bytes came for `idle_timeout` seconds (tills that never cut)."""
        now = time.monotonic() if now is None else now
        out: list[RawReceipt] = []
        if self._last is not None and now - self._last >= self.idle_timeout:
            self._idle(out)
        return out

    def flush(self) -> list[RawReceipt]:
        """Whatever is pending (at shutdown, or the end of a capture file); the state is reset."""
        out: list[RawReceipt] = []
        self._raw += self._pending
        self._finish("flush", out)
        self._reset_parse()
        self._reset_printer()
        self._last = None
        return out

    # -- state --------------------------------------------------------------------------------

    def _reset_parse(self) -> None:
        self._pending = b""      # the start of a command whose arguments have not all come
        self._skip = 0           # payload bytes still to consume (images, codes, stored data)
        self._stage: tuple | None = None  # a multi-part command in progress
        self._after_cr = False

    def _reset_printer(self) -> None:
        self._kanji = self._cjk
        self._table: str | None = None
        self._codec = self._current_codec()

    def _reset_receipt(self) -> None:
        self._raw = bytearray()
        self._lines: list[str] = []
        self._parts: list[str] = []
        self._seg = bytearray()
        self._has_text = False
        self._graphic_line = False

    def _current_codec(self) -> str:
        if self._fixed:
            return self.encoding
        if self._kanji:
            return self.encoding if self._cjk else "gb18030"
        if self._table is not None:
            return self._table
        return "cp437" if self._cjk else self.encoding

    def _set_codec(self) -> None:
        codec = self._current_codec()
        if codec != self._codec:
            if self._seg:
                self._parts.append(_decode(bytes(self._seg), self._codec))
                self._seg.clear()
            self._codec = codec

    def _end_line(self) -> None:
        if self._graphic_line:  # the line feed that prints an ESC * stripe: no text line
            self._graphic_line = False
            if not self._seg and not self._parts:
                return
        if self._seg:
            self._parts.append(_decode(bytes(self._seg), self._codec))
            self._seg.clear()
        self._lines.append("".join(self._parts).rstrip())
        self._parts = []

    def _finish(self, ended_by: str, out: list[RawReceipt]) -> None:
        if self._seg or self._parts:
            self._end_line()
        if self._has_text:
            lines = self._lines
            start, end = 0, len(lines)
            while start < end and not lines[start]:
                start += 1
            while end > start and not lines[end - 1]:
                end -= 1
            text = "\n".join(lines[start:end])
            if text.strip():
                out.append(RawReceipt(bytes(self._raw), text, ended_by))
        self._reset_receipt()

    def _finish_at(self, buf: bytes, seg_start: int, end: int, ended_by: str, out: list[RawReceipt]) -> int:
        """The receipt ends at buf[end]: its raw bytes run from seg_start up to there; finish it.

        Returns `end`, where the next receipt's bytes start.
        """
        self._raw += buf[seg_start:end]
        self._finish(ended_by, out)
        return end

    def _idle(self, out: list[RawReceipt]) -> None:
        self._raw += self._pending
        self._finish("idle", out)
        self._reset_parse()

    # -- the state machine --------------------------------------------------------------------

    def _process(self, data: bytes, out: list[RawReceipt]) -> None:
        buf = self._pending + data if self._pending else data
        self._pending = b""
        n = len(buf)
        i = seg_start = 0
        cap = self.max_receipt_bytes
        while i < n:
            room = cap - len(self._raw) - (i - seg_start)
            if room <= 0:
                seg_start = self._finish_at(buf, seg_start, i, "size", out)
                continue
            limit = min(n, i + room)
            if self._skip:
                take = min(self._skip, limit - i)
                self._skip -= take
                i += take
                continue
            if self._stage is not None:
                j = self._run_stage(buf, i, limit)
                if j < 0:
                    break
                i = j
                continue
            b = buf[i]
            if b >= 0x20:
                j = _TEXT.match(buf, i, limit).end()
                run = buf[i:j]
                self._seg += run
                if not self._has_text and run.strip(b" \x7f"):
                    self._has_text = True
                self._after_cr = False
                i = j
                continue
            if b == 0x0A:  # LF
                if not self._after_cr:
                    self._end_line()
                self._after_cr = False
                i += 1
                continue
            self._after_cr = False
            if b == 0x0D:  # CR: a line end; an LF right after it is the same line end
                self._end_line()
                self._after_cr = True
                i += 1
            elif b == 0x09:  # HT
                self._seg += b" "
                i += 1
            elif b == 0x0C:  # FF
                if self._seg or self._parts:
                    self._end_line()
                i += 1
            elif b == ESC:
                if i + 1 >= n:
                    break
                c = buf[i + 1]
                if c == 0x40:  # ESC @: initialise; starts the next receipt
                    if self._has_text:
                        seg_start = self._finish_at(buf, seg_start, i, "init", out)
                    else:  # nothing printed yet: the receipt starts here
                        self._reset_receipt()
                        seg_start = i
                    self._kanji = self._cjk
                    self._table = None
                    self._set_codec()
                    i += 2
                    continue
                j = self._esc(buf, i, c, n)
                if j < 0:
                    break
                if c == 0x69 or c == 0x6D:  # ESC i / ESC m: paper cut
                    seg_start = self._finish_at(buf, seg_start, j, "cut", out)
                i = j
            elif b == GS:
                if i + 1 >= n:
                    break
                c = buf[i + 1]
                j = self._gs(buf, i, c, n)
                if j < 0:
                    break
                if c == 0x56:  # GS V: paper cut, every form
                    seg_start = self._finish_at(buf, seg_start, j, "cut", out)
                i = j
            elif b == FS:
                if i + 1 >= n:
                    break
                j = self._fs(buf, i, buf[i + 1], n)
                if j < 0:
                    break
                i = j
            elif b == DLE:
                j = self._dle(buf, i, n)
                if j < 0:
                    break
                i = j
            else:  # NUL, CAN and other lone control bytes
                i += 1
        self._raw += buf[seg_start:i]
        if i < n:
            self._pending = buf[i:]

    def _skip_data(self, buf: bytes, i: int, n: int) -> int:
        """ESC ( / GS ( / FS ( X pL pH data at i: skip the pL + pH * 256 data bytes after the header.

        The end of the header (or -1 while it is incomplete).
        """
        if i + 5 > n:
            return -1
        self._skip = buf[i + 3] | buf[i + 4] << 8
        return i + 5

    def _esc(self, buf: bytes, i: int, c: int, n: int) -> int:
        """End of the ESC command at i (or -1 while its arguments are incomplete)."""
        args = _ESC_ARGS.get(c)
        if args is not None:
            j = i + 2 + args
            if j > n:
                return -1
            return j
        if c == 0x64 or c == 0x4A:  # ESC d n: print and feed n lines; ESC J n: feed n dots
            if i + 3 > n:
                return -1
            if c == 0x64 or self._seg or self._parts:
                self._end_line()
            return i + 3
        if c == 0x74:  # ESC t n: code page
            if i + 3 > n:
                return -1
            self._table = CODE_PAGES.get(buf[i + 2], self.encoding)
            self._set_codec()
            return i + 3
        if c == 0x2A:  # ESC * m nL nH d1..dk: bit image, k = n or 3n
            if i + 5 > n:
                return -1
            m = buf[i + 2]
            dots = buf[i + 3] | buf[i + 4] << 8
            self._skip = dots * (3 if m in (32, 33) else 1)
            self._graphic_line = True
            return i + 5
        if c == 0x26:  # ESC & y c1 c2 [x d1..d(y*x)]...: user-defined characters
            if i + 5 > n:
                return -1
            y, c1, c2 = buf[i + 2], buf[i + 3], buf[i + 4]
            if c2 >= c1:
                self._stage = ("esc&", y, c2 - c1 + 1)
            return i + 5
        if c == 0x28:  # ESC ( X pL pH data
            return self._skip_data(buf, i, n)
        if c == 0x44:  # ESC D n1..nk NUL: tab positions
            self._stage = ("nul", _NUL_CAP)
            return i + 2
        if c == 0x69 or c == 0x6D:  # ESC i / ESC m: cut
            return i + 2
        return i + 2  # unknown: the command byte alone

    def _gs(self, buf: bytes, i: int, c: int, n: int) -> int:
        args = _GS_ARGS.get(c)
        if args is not None:
            j = i + 2 + args
            return j if j <= n else -1
        if c == 0x28:  # GS ( X pL pH data: 2-D codes (k), graphics (L), every other function
            return self._skip_data(buf, i, n)
        if c == 0x76:  # GS v 0 m xL xH yL yH d1..dk: raster image, k = x * y
            if i + 3 > n:
                return -1
            if buf[i + 2] != 0x30:
                return i + 2
            if i + 8 > n:
                return -1
            self._skip = (buf[i + 4] | buf[i + 5] << 8) * (buf[i + 6] | buf[i + 7] << 8)
            return i + 8
        if c == 0x6B:  # GS k m ...: barcode
            if i + 3 > n:
                return -1
            m = buf[i + 2]
            if m <= 6:  # d1..dk NUL
                self._stage = ("nul", _NUL_CAP)
                return i + 3
            if i + 4 > n:
                return -1
            self._skip = buf[i + 3]  # m 65-73: n d1..dn
            return i + 4
        if c == 0x56:  # GS V m [n]: cut
            if i + 3 > n:
                return -1
            m = buf[i + 2]
            if m in (65, 66, 97, 98, 103, 104):
                return i + 4 if i + 4 <= n else -1
            return i + 3
        if c == 0x38:  # GS 8 L p1 p2 p3 p4 data (graphics, 32-bit length)
            if i + 3 > n:
                return -1
            if buf[i + 2] != 0x4C:
                return i + 2
            if i + 7 > n:
                return -1
            self._skip = int.from_bytes(buf[i + 3:i + 7], "little")
            return i + 7
        if c == 0x2A:  # GS * x y d1..d(x*y*8): downloaded bit image
            if i + 4 > n:
                return -1
            self._skip = buf[i + 2] * buf[i + 3] * 8
            return i + 4
        if c == 0x44:  # GS D 0 fn a kc1 kc2 b c <Windows BMP> (fn 67 NV, 83 download)
            if i + 4 > n:
                return -1
            if buf[i + 2] != 0x30 or buf[i + 3] not in (0x43, 0x53):
                return i + 2
            if i + 9 > n:
                return -1
            self._stage = ("bmp",)
            return i + 9
        if c == 0x43:  # GS C: counter printing (obsolete)
            if i + 3 > n:
                return -1
            sub = buf[i + 2]
            if sub == 0x3B:  # GS C ; sa ; sb ; sn ; sr ; sc ;
                self._stage = ("semi", 5, 64)
                return i + 3
            extra = {0x30: 2, 0x31: 6, 0x32: 2}.get(sub, 0)
            j = i + 3 + extra
            return j if j <= n else -1
        return i + 2

    def _fs(self, buf: bytes, i: int, c: int, n: int) -> int:
        args = _FS_ARGS.get(c)
        if args is not None:
            j = i + 2 + args
            return j if j <= n else -1
        if c == 0x26 or c == 0x2E:  # FS & / FS .: Chinese mode on / off
            self._kanji = c == 0x26
            self._set_codec()
            return i + 2
        if c == 0x28:  # FS ( X pL pH data
            return self._skip_data(buf, i, n)
        if c == 0x32:  # FS 2 c1 c2 d1..d72: user-defined kanji
            if i + 4 > n:
                return -1
            self._skip = _KANJI_CHAR_BYTES
            return i + 4
        if c == 0x71:  # FS q n [xL xH yL yH d1..d(x*y*8)]...: stored (NV) logos
            if i + 3 > n:
                return -1
            if buf[i + 2]:
                self._stage = ("fsq", buf[i + 2])
            return i + 3
        if c == 0x67:  # FS g 1 m a1..a4 nL nH d1..dk (write NV user memory) / FS g 2 ... (read)
            if i + 3 > n:
                return -1
            if buf[i + 2] not in (0x31, 0x32):
                return i + 2
            if i + 10 > n:
                return -1
            if buf[i + 2] == 0x31:
                self._skip = buf[i + 8] | buf[i + 9] << 8
            return i + 10
        return i + 2

    def _dle(self, buf: bytes, i: int, n: int) -> int:
        if i + 2 > n:
            return -1
        c = buf[i + 1]
        if c == 0x04 or c == 0x05:  # DLE EOT n [a] / DLE ENQ n
            if i + 3 > n:
                return -1
            if c == 0x04 and buf[i + 2] in (7, 8):
                return i + 4 if i + 4 <= n else -1
            return i + 3
        if c == 0x14:  # DLE DC4 fn ...
            if i + 3 > n:
                return -1
            j = i + 3 + _DLE_DC4_ARGS.get(buf[i + 2], 0)
            return j if j <= n else -1
        return i + 1  # a lone DLE

    def _run_stage(self, buf: bytes, i: int, limit: int) -> int:
        """Advance a multi-part command; the new position, or -1 when its next header is incomplete."""
        stage = self._stage
        kind = stage[0]
        if kind == "nul":  # data up to a NUL (barcode data, tab stops), capped
            left = stage[1]
            end = min(limit, i + left)
            k = buf.find(b"\x00", i, end)
            if k >= 0:
                self._stage = None
                return k + 1
            left -= end - i
            self._stage = ("nul", left) if left > 0 else None
            return end
        if kind == "semi":  # GS C ; ...: five ';' separated fields, capped
            semis, left = stage[1], stage[2]
            while i < limit and semis and left:
                if buf[i] == 0x3B:
                    semis -= 1
                i += 1
                left -= 1
            self._stage = ("semi", semis, left) if semis and left else None
            return i
        n = len(buf)
        if kind == "esc&":  # per character: x, then y*x bytes
            if i + 1 > n:
                return -1
            y, chars = stage[1], stage[2]
            self._skip = y * buf[i]
            self._stage = ("esc&", y, chars - 1) if chars > 1 else None
            return i + 1
        if kind == "fsq":  # per logo: xL xH yL yH, then x*y*8 bytes
            if i + 4 > n:
                return -1
            self._skip = (buf[i] | buf[i + 1] << 8) * (buf[i + 2] | buf[i + 3] << 8) * 8
            self._stage = ("fsq", stage[1] - 1) if stage[1] > 1 else None
            return i + 4
        if kind == "bmp":  # "BM" size(4, little-endian) ...: the file's own size
            if i + 6 > n:
                return -1
            self._stage = None
            if buf[i:i + 2] != b"BM":
                return i
            self._skip = max(0, int.from_bytes(buf[i + 2:i + 6], "little") - 6)
            return i + 6
        self._stage = None
        return i


def parse_receipts(data: bytes, encoding: str = "gb18030") -> list[RawReceipt]:
    """Every receipt of a whole capture (fed at once, then flushed)."""
    stream = EscPosStream(encoding=encoding, idle_timeout=float("inf"))
    return stream.feed(data, now=0.0) + stream.flush()

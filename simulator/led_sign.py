"""A virtual LED text sign (Alpha protocol) on a pseudo-terminal, for tests and the demo.

    sign = VirtualLedSign().start()     # a pty: the gateway's led_sign `port` is sign.port
    ...                                 # the gateway writes packets to it
    sign.current                        # ("Welcome", "rotate"): what it shows now, or None
    sign.shown                          # every (text, mode) it was told to show, in order
    sign.rejected                       # packets dropped: bad checksum, malformed, cut short
    sign.unplug(); sign.plug()          # the cable pulled (or the power cut) and back

The serial line is simulator.till's `PtyLine` (a raw pty behind a stable symlink). The sign reads its
line as a real one does, with `drivers.led_sign.FrameDecoder`: it takes write TEXT packets addressed to
it (its address, or "00") and to its type code (or "Z"), and shows the text of `file_label` (any label
if None). Like a sign whose memory is not battery-backed, it forgets the text when unplugged
(`unplug(power_off=False)` models a pulled data cable only).
"""

from __future__ import annotations

import threading
from typing import Self

from drivers.led_sign import WRITE_TEXT, Frame, FrameDecoder
from simulator.till import PtyLine


class VirtualLedSign:
    def __init__(self, name: str = "led-sign", *, address: str = "01", type_code: str | None = None,
                 file_label: str | None = "A", link_dir: str | None = None):
        self.address = address.upper()
        self.type_code = type_code
        self.file_label = file_label
        self._lock = threading.Lock()
        self._decoder = FrameDecoder()
        self.frames: list[Frame] = []  # every good command received, addressed to this sign or not
        self.shown: list[tuple[str, str | None]] = []
        self.current: tuple[str, str | None] | None = None
        self.received = 0  # bytes
        self.line = PtyLine(name, self._on_data, link_dir)

    @property
    def port(self) -> str:
        return self.line.port

    @property
    def rejected(self) -> int:
        with self._lock:
            return self._decoder.rejected

    @property
    def current_text(self) -> str | None:
        with self._lock:
            return self.current[0] if self.current else None

    def start(self) -> Self:
        self.line.start()
        return self

    def stop(self) -> None:
        self.line.close()

    def unplug(self, power_off: bool = True) -> None:
        self.line.unplug()
        with self._lock:
            self._decoder.reset()
            if power_off:
                self.current = None

    def plug(self) -> None:
        self.line.plug()

    def _for_me(self, frame: Frame) -> bool:
        if frame.address not in ("00", self.address):
            return False
        if frame.type_code != "Z" and self.type_code is not None and frame.type_code != self.type_code:
            return False
        return self.file_label is None or frame.file_label == self.file_label

    def _on_data(self, data: bytes) -> None:
        with self._lock:
            self.received += len(data)
            for frame in self._decoder.feed(data):
                self.frames.append(frame)
                if frame.command == WRITE_TEXT and frame.text is not None and self._for_me(frame):
                    self.current = (frame.text, frame.mode)
                    self.shown.append(self.current)

"""A virtual OSDP card reader on a pseudo-terminal, for tests and the demo.

libosdp's own PeripheralDevice answers on the master side of a pty pair; the gateway's OSDP driver
opens the slave side (`reader.port`, a /dev/pts/N path) with pyserial exactly as it opens
/dev/ttyUSB0 on a site, so the bytes cross a real tty. `swipe()` and `type_pin()` make the reader
report a card or keys; every command the control panel sends (output pulses, LEDs, buzzer, key set)
is recorded in `commands`. `unplug()` cuts the reader off the bus (it hears nothing and says
nothing, as a reader with its cable pulled) and `plug()` connects it again.

It uses libosdp for the reader side on purpose: the driver under test is then checked against an
independent, complete OSDP implementation rather than against our own idea of the protocol.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import tty

import osdp

log = logging.getLogger(__name__)


class PtyMasterChannel:
    """The master end of a pty as an osdp channel; drops all traffic while unplugged."""

    def __init__(self, fd: int):
        self.fd = fd
        self.id = 0
        self.plugged = True

    def read(self, max_bytes: int) -> bytes:
        try:
            if not select.select([self.fd], [], [], 0)[0]:
                return b""
            data = os.read(self.fd, max_bytes)
        except OSError:  # the slave side is not open (yet, or any more): nothing to hear
            return b""
        return data if self.plugged else b""

    def write(self, data: bytes) -> int:
        if not self.plugged:
            return len(data)  # said into a cut cable
        try:
            return os.write(self.fd, data)
        except OSError:
            return 0

    def flush(self) -> None:
        pass


class VirtualOsdpReader:
    """One OSDP reader (a PD at `address`) with an output (door strike), an LED and a buzzer.

    `scbk` (16 bytes) enables the secure channel with that key; `install_mode=True` lets a control
    panel set the key with osdp_KEYSET over a channel opened with the default key (SCBK-D).
    """

    def __init__(self, address: int = 1, *, scbk: bytes | None = None, install_mode: bool = False,
                 name: str = "reader", log_level: int = osdp.LogLevel.Error):
        self.address = address
        self.scbk = scbk
        self.commands: list[dict] = []  # every command received, in order, as libosdp decoded it
        self._lock = threading.Lock()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: a serial line carries bytes as they are
        self.port = os.ttyname(self._slave)
        self.channel = PtyMasterChannel(self._master)
        flags = [osdp.LibFlag.InstallMode] if install_mode else []
        info = osdp.PDInfo(address, self.channel, scbk=scbk, name=name, flags=flags)
        capabilities = osdp.PDCapabilities([
            (osdp.Capability.OutputControl, 1, 1),
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CardDataFormat, 1, 0),
            (osdp.Capability.CommunicationSecurity, 1, 1),
        ])
        self.pd = osdp.PeripheralDevice(info, capabilities, log_level=log_level,
                                        command_handler=self._on_command)
        self._started = False

    # --- the reader's life ---

    def start(self) -> "VirtualOsdpReader":
        self.pd.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self.pd.stop()
            self._started = False
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def unplug(self) -> None:
        self.channel.plugged = False

    def plug(self) -> None:
        self.channel.plugged = True

    @property
    def online(self) -> bool:
        """The control panel is talking to this reader (libosdp's own view, from the reader's side)."""
        return bool(self.pd.is_online())

    @property
    def secure(self) -> bool:
        return bool(self.pd.is_sc_active())

    # --- a person at the reader ---

    def swipe(self, card_hex: str, bits: int, *, wiegand: bool = True) -> bool:
        """Present a card: `card_hex` holds `bits` bits, left-aligned (as OSDP sends raw card data)."""
        data = bytes.fromhex(card_hex)
        if (bits + 7) // 8 != len(data):
            raise ValueError(f"{bits} bits need {(bits + 7) // 8} bytes, got {len(data)}")
        fmt = osdp.CardFormat.Wiegand if wiegand else osdp.CardFormat.Unspecified
        return bool(self.pd.submit_event({"event": osdp.Event.CardRead, "reader_no": 0, "format": fmt,
                                          "direction": 0, "length": bits, "data": data}))

    def type_pin(self, digits: str) -> bool:
        """Press keys on the keypad (digits, `*` and `#`), reported as one osdp_KEYPAD reply.

        Encoded as readers send them: digits in ASCII, `*` as 0x7F and `#` as 0x0D.
        """
        data = digits.encode("ascii").replace(b"*", b"\x7f").replace(b"#", b"\r")
        return bool(self.pd.submit_event({"event": osdp.Event.KeyPress, "reader_no": 0, "data": data}))

    def tamper(self, tampered: bool = True) -> bool:
        """Open (or close) the reader's case: a local status report (entries: tamper, power)."""
        return bool(self.pd.submit_event({"event": osdp.Event.Status, "type": osdp.StatusReportType.Local,
                                          "nr_entries": 2, "report": bytes([int(tampered), 0])}))

    # --- the bus itself ---

    def inject(self, data: bytes) -> None:
        """Put raw bytes on the bus as if the reader sent them: line noise, a second talker."""
        try:
            os.write(self._master, data)
        except OSError:
            pass

    # --- what the control panel told it ---

    def received(self, command: int) -> list[dict]:
        with self._lock:
            return [c for c in self.commands if c.get("command") == command]

    @property
    def outputs(self) -> list[dict]:
        return self.received(osdp.Command.Output)

    @property
    def leds(self) -> list[dict]:
        return self.received(osdp.Command.LED)

    @property
    def buzzers(self) -> list[dict]:
        return self.received(osdp.Command.Buzzer)

    def _on_command(self, command: dict) -> tuple[int, None]:
        with self._lock:
            self.commands.append(dict(command))
        if command.get("command") == osdp.Command.Keyset:
            self.scbk = bytes(command.get("data", b""))  # a real reader stores it in flash
        return 0, None

"""OSDP card readers on an RS-485 bus: the control-panel side, through libosdp.

The driver runs libosdp's ControlPanel over a serial port (drivers.serial_channel) and turns what the
readers say into typed events. Card reads and keypad entries are personal data and carry no decision
yet, so they are emitted as *internal* events (`access.card_read`, `access.keypad`) for the access
service to judge; they never go upstream raw. Each reader's state (online, offline, tamper) is an
internal `access.reader_status` event, and the device is online while every reader answers.

The access service acts through two methods of the running driver, found in `active_panels` by
device id: `open_door` pulses the reader's output (the door strike) and `feedback` shows the verdict
on the reader (LED green or red, and the buzzer). The driver holds no rules about who may enter.

libosdp notes that shape this module:
- one channel serves every reader on the bus (multi-drop); readers are told apart by address, but
  libosdp's callbacks and status bitmasks use the reader's index in the configured list;
- a reader that stops answering is left alone by libosdp for minutes before it is probed again, so
  the driver restarts the probing itself every `reconnect_interval` (disable and enable the reader);
- output and LED timers are in units of 100 ms and the binding passes them as one byte: pulses are
  capped at 25.5 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.validation import Duration, StrictModel, duplicates

from .base import DeviceConfig, Driver
from .registry import register
from .serial_channel import SerialChannel

MAX_TIMER_S = 25.5  # 255 ticks of 100 ms: the binding passes output and LED timers as one byte
STATUS_INTERVAL_S = 0.25  # how often reader states are read from libosdp
REFRESH_INTERVAL_S = 0.005  # how often libosdp's control panel state machine is stepped
REENABLE_SETTLE_S = 0.2  # a disable must be seen by a refresh before the enable

# OSDP output control code 5: temporary ON, then back to the permanent state when the timer ends.
OUTPUT_TEMPORARY_ON = 5
# OSDP LED temporary control code 2: set the temporary state and start its timer.
LED_TEMPORARY_SET = 2
# OSDP buzzer tone code 2: the reader's default tone.
BUZZER_DEFAULT_TONE = 2
# OSDP keypad data: '*' and '#' are sent as DEL and CR.
KEYPAD_SPECIAL = {0x7F: "*", 0x0D: "#"}

# Running drivers by device id, so that the access service can reach the readers of a device.
active_panels: dict[str, "OsdpDriver"] = {}


class OsdpReaderSettings(StrictModel):
    address: int = Field(..., ge=0, le=126, description="the reader's OSDP address on the bus")
    name: str | None = Field(None, description="where it is, e.g. 'lobby-in'")
    scbk: str | None = Field(None, description="secure channel base key, 32 hex digits; none: no secure channel")
    install_mode: bool = Field(False, description="accept a reader that does not know `scbk` yet: open the secure "
                                                  "channel with the default install key and give it `scbk`; "
                                                  "turn it off once the reader has its key")

    @field_validator("scbk")
    @classmethod
    def _scbk_is_16_bytes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        cleaned = value.replace(" ", "").replace(":", "")
        try:
            key = bytes.fromhex(cleaned)
        except ValueError:
            raise ValueError("scbk must be hexadecimal") from None
        if len(key) != 16:
            raise ValueError(f"scbk must be 16 bytes (32 hex digits), got {len(key)}")
        return cleaned.lower()

    @model_validator(mode="after")
    def _install_needs_a_key(self) -> "OsdpReaderSettings":
        if self.install_mode and self.scbk is None:
            raise ValueError("install_mode needs the scbk to install")
        return self

    @property
    def label(self) -> str:
        return self.name or f"reader-{self.address}"


class OsdpSettings(DeviceConfig):
    kind: Literal["osdp"]
    port: str = Field(..., min_length=1, description="serial port of the RS-485 bus, e.g. /dev/ttyUSB0")
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 9600
    readers: list[OsdpReaderSettings] = Field(..., min_length=1, max_length=126)
    output_pulse: Duration = Field(3.0, gt=0, le=MAX_TIMER_S, description="how long open_door releases the strike")
    output_no: int = Field(0, ge=0, le=255, description="the reader output wired to the door strike")
    feedback_duration: Duration = Field(2.0, gt=0, le=MAX_TIMER_S, description="how long the LED shows a verdict")
    reconnect_interval: Duration = Field(10.0, gt=0, description="probe a silent reader again this often")

    @field_validator("readers")
    @classmethod
    def _addresses_unique(cls, readers: list[OsdpReaderSettings]) -> list[OsdpReaderSettings]:
        repeated = duplicates(reader.address for reader in readers)
        if repeated:
            raise ValueError(f"reader address {repeated[0]} is used twice")
        return readers


def _ticks(seconds: float) -> int:
    """Seconds as the one-byte count of 100 ms that OSDP timers take (at least one tick)."""
    return max(1, min(255, round(seconds * 10)))


@register
class OsdpDriver(Driver):
    kind = "osdp"
    Settings = OsdpSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        self._panel: Any = None  # osdp.ControlPanel while running
        self._readers: list[OsdpReaderSettings] = list(settings.readers)  # type: ignore[attr-defined]
        self._index = {reader.address: i for i, reader in enumerate(self._readers)}
        self._tamper = [False] * len(self._readers)  # written by libosdp's thread, read by the loop
        self._reported: list[str | None] = [None] * len(self._readers)
        self._ever_online = [False] * len(self._readers)
        self._silent_since = [time.monotonic()] * len(self._readers)

    # --- running ---

    async def run(self) -> None:
        import osdp  # libosdp loads only when a site has OSDP readers

        settings: OsdpSettings = self.settings  # type: ignore[assignment]
        channel = SerialChannel(settings.port, settings.baud)
        if not channel.open():
            self.ctx.log.warning("cannot open %s yet: %s", settings.port, channel.last_error)
        infos = [osdp.PDInfo(reader.address, channel, scbk=self._key(reader), name=reader.label,
                             flags=self._flags(osdp, reader))
                 for reader in self._readers]
        try:
            panel = _make_panel(infos, self._on_event)
        except Exception:
            channel.close()
            raise
        panel.start()
        self._panel = panel
        active_panels[self.ctx.device_id] = self
        try:
            started = time.monotonic()
            self._silent_since = [started] * len(self._readers)
            while True:
                if panel.thread is None or not panel.thread.is_alive():
                    raise RuntimeError("libosdp's refresh thread stopped")
                await self._check_readers(panel, channel)
                await asyncio.sleep(STATUS_INTERVAL_S)
        finally:
            if active_panels.get(self.ctx.device_id) is self:
                del active_panels[self.ctx.device_id]
            self._panel = None
            panel.stop()
            channel.close()

    @staticmethod
    def _key(reader: OsdpReaderSettings) -> bytes | None:
        return bytes.fromhex(reader.scbk) if reader.scbk else None

    @staticmethod
    def _flags(osdp: Any, reader: OsdpReaderSettings) -> list[int]:
        # With a key and no install mode, never fall back to the default key or to plain text: a
        # reader swapped for one that does not know the key stays offline rather than in the clear.
        if reader.scbk and not reader.install_mode:
            return [osdp.LibFlag.EnforceSecure]
        return []

    async def _check_readers(self, panel: Any, channel: SerialChannel) -> None:
        online_mask = panel.status()
        secure_mask = panel.sc_status()
        now = time.monotonic()
        silent: list[str] = []
        for i, reader in enumerate(self._readers):
            online = bool(online_mask & (1 << i))
            if online:
                self._ever_online[i] = True
                self._silent_since[i] = now
                state = "tamper" if self._tamper[i] else "online"
            else:
                silent.append(reader.label)
                waited = now - self._silent_since[i]
                # A reader that has not answered yet is only "offline" once it had its chance.
                state = "offline" if self._ever_online[i] or waited >= self.settings.reconnect_interval else None
                if waited >= self.settings.reconnect_interval:
                    self._silent_since[i] = now
                    await self._reprobe(panel, reader.address)
            if state is not None and state != self._reported[i]:
                self._reported[i] = state
                self.ctx.emit("access.reader_status", {
                    "reader": reader.address, "reader_name": reader.label, "status": state,
                    "secure": bool(secure_mask & (1 << i))}, internal=True)
        if not silent:
            self.ctx.set_online()
        else:
            reason = f"not answering: {', '.join(silent)}"
            if channel.last_error:
                reason += f" ({channel.last_error})"
            self.ctx.set_offline(reason)

    async def _reprobe(self, panel: Any, address: int) -> None:
        """Make libosdp probe a silent reader now instead of after its own long back-off."""
        panel.disable_pd(address)
        await asyncio.sleep(REENABLE_SETTLE_S)
        panel.enable_pd(address)

    # --- from libosdp's refresh thread ---

    def _on_event(self, index: int, event: dict) -> int:
        try:
            self._handle_event(index, event)
        except Exception:  # never let a surprise in one event reach libosdp's C code
            self.ctx.log.exception("OSDP event not understood: %r", event)
        return 0

    def _handle_event(self, index: int, event: dict) -> None:
        import osdp

        reader = self._readers[index]
        kind = event.get("event")
        where = {"reader": reader.address, "reader_name": reader.label}
        if kind == osdp.Event.CardRead:
            fmt = event.get("format")
            data = bytes(event.get("data", b""))
            if fmt == osdp.CardFormat.ASCII:
                card = {"format": "ascii", "bits": len(data) * 8, "data": data.hex()}
            else:
                card = {"format": "wiegand" if fmt == osdp.CardFormat.Wiegand else "raw",
                        "bits": int(event.get("length", len(data) * 8)), "data": data.hex()}
            self.ctx.emit("access.card_read", {**where, **card}, internal=True)
        elif kind == osdp.Event.KeyPress:
            digits = "".join(KEYPAD_SPECIAL.get(b, chr(b)) for b in bytes(event.get("data", b"")))
            self.ctx.emit("access.keypad", {**where, "digits": digits}, internal=True)
        elif kind == osdp.Event.Status and event.get("type") == osdp.StatusReportType.Local:
            report = bytes(event.get("report", b""))  # one byte per entry: tamper, power
            self._tamper[index] = bool(report[:1] and report[0])
        else:
            self.ctx.log.debug("OSDP event ignored: %r", event)

    # --- commands from the access service ---

    def open_door(self, reader_address: int, seconds: float | None = None) -> bool:
        """Release the door strike on the reader's output for `seconds` (default `output_pulse`).

        OSDP counts the pulse in 100 ms ticks in one byte: it lasts 0.1 s to 25.5 s. True when
        libosdp queued the command; it reaches the reader on its next poll. KeyError for an address
        that is not configured on this device.
        """
        import osdp

        pulse = self.settings.output_pulse if seconds is None else float(seconds)
        return self._submit(reader_address, {
            "command": osdp.Command.Output, "output_no": self.settings.output_no,
            "control_code": OUTPUT_TEMPORARY_ON, "timer_count": _ticks(pulse)})

    def feedback(self, reader_address: int, granted: bool) -> bool:
        """Show the verdict on the reader: green LED and one beep, or red LED and three beeps."""
        import osdp

        ticks = _ticks(self.settings.feedback_duration)
        led = self._submit(reader_address, {
            "command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": True,
            "control_code": LED_TEMPORARY_SET, "timer_count": ticks,
            "on_color": osdp.CommandLEDColor.Green if granted else osdp.CommandLEDColor.Red,
            "off_color": osdp.CommandLEDColor.Black, "on_count": ticks, "off_count": 0})
        beeps = 1 if granted else 3
        buzzer = self._submit(reader_address, {
            "command": osdp.Command.Buzzer, "reader": 0, "control_code": BUZZER_DEFAULT_TONE,
            "on_count": 2, "off_count": 0 if granted else 2, "rep_count": beeps})
        return led and buzzer

    def _submit(self, reader_address: int, command: dict) -> bool:
        if reader_address not in self._index:
            raise KeyError(f"no reader at OSDP address {reader_address} on {self.ctx.device_id}")
        panel = self._panel
        if panel is None:
            return False
        try:
            return bool(panel.submit_command(reader_address, command))
        except Exception as exc:  # libosdp refuses (queue full, bad field): say no, don't crash the caller
            self.ctx.log.warning("OSDP command to reader %s refused: %s", reader_address, exc)
            return False


def _make_panel(infos: list, event_handler: Any) -> Any:
    """A started-ready libosdp ControlPanel that hands every event to `event_handler` only.

    The stock class also keeps every event in a per-reader queue for `get_event()`; nobody reads
    those queues here, so over months they would hold every card ever read.
    """
    import osdp

    class ControlPanel(osdp.ControlPanel):
        def _internal_event_handler(self, pd: int, event: dict) -> int:
            handler = self.user_event_handler
            return handler(pd, event) if handler else 0

        @staticmethod
        def refresh(event, lock, ctx):
            # The stock loop steps libosdp's state machine every 20 ms; a door command queued
            # after a card read then waits up to three steps for its turn on the bus. Stepping
            # every REFRESH_INTERVAL_S costs microseconds of C per step and cuts that wait.
            while not event.is_set():
                with lock:
                    ctx.refresh()
                time.sleep(REFRESH_INTERVAL_S)

    return ControlPanel(infos, log_level=osdp.LogLevel.Error, event_handler=event_handler)

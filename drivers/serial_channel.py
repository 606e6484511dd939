"""A serial port as a byte channel that never raises: for protocol stacks that poll it from C code.

libosdp's Python binding calls `read(max_bytes) -> bytes`, `write(data) -> int` and `flush()` on
the channel object from inside its C refresh loop. An exception raised there is not handled by the
binding (it leaves a Python error set inside C code), so every failure of the port is caught here:
the channel records it (`last_error`, `errors`), closes the port, and tries to reopen it at most
every `reopen_interval` seconds. A USB adapter pulled out and plugged back in therefore just looks
like silence on the bus for a while, which is how the protocol above expects a dead line to look.

Reads do not block by default (`read_timeout=0`): the callers poll every few milliseconds and hold
their own lock while they do, so a blocking read would only hold up their commands.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import serial

log = logging.getLogger(__name__)


class SerialChannel:
    """A pyserial port with the read/write/flush interface of `osdp.Channel`, failures reported."""

    def __init__(self, port: str, baud: int = 9600, *, read_timeout: float = 0.0,
                 reopen_interval: float = 1.0, on_error: Callable[[str], None] | None = None,
                 opener: Callable[..., serial.Serial] = serial.Serial):
        self.port = port
        self.baud = baud
        self.read_timeout = read_timeout
        self.reopen_interval = reopen_interval
        self.on_error = on_error
        self.last_error: str | None = None  # None while the port works
        self.errors = 0  # failures seen, reopening attempts included
        self.id = 0  # osdp.Channel has it; libosdp uses it to tell channels apart
        self._opener = opener
        self._serial: serial.Serial | None = None
        self._next_open = 0.0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> bool:
        """Open the port now if it is closed; False (and the error recorded) if it cannot be."""
        with self._lock:
            return self._ensure_open(force=True)

    def close(self) -> None:
        """Close for good: later calls read nothing and write nothing."""
        with self._lock:
            self._closed = True
            self._drop()

    # --- the interface the protocol stack calls ---

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            if not self._ensure_open():
                return b""
            try:
                data = self._serial.read(max_bytes)  # type: ignore[union-attr]
            except Exception as exc:  # SerialException, OSError (EIO once a pty/USB end goes away)
                self._fail("read", exc)
                return b""
            return bytes(data[:max_bytes])

    def write(self, data: bytes) -> int:
        with self._lock:
            if not self._ensure_open():
                return 0
            try:
                written = self._serial.write(data)  # type: ignore[union-attr]
            except Exception as exc:
                self._fail("write", exc)
                return 0
            return int(written or 0)

    def flush(self) -> None:
        """Discard what is waiting to be read (libosdp calls it to resynchronise after an error)."""
        with self._lock:
            if self._serial is None:
                return
            try:
                self._serial.reset_input_buffer()
            except Exception as exc:
                self._fail("flush", exc)

    # --- inside the lock ---

    def _ensure_open(self, force: bool = False) -> bool:
        if self._serial is not None:
            return True
        if self._closed or (not force and time.monotonic() < self._next_open):
            return False
        try:
            self._serial = self._opener(self.port, self.baud, timeout=self.read_timeout,
                                        write_timeout=1.0)
        except Exception as exc:
            self._fail("open", exc)
            return False
        if self.last_error is not None:
            log.info("serial port %s is back", self.port)
        self.last_error = None
        return True

    def _fail(self, action: str, exc: Exception) -> None:
        message = f"{action} {self.port}: {exc}"
        self.errors += 1
        if message != self.last_error:
            log.warning("serial channel: %s", message)
        self.last_error = message
        self._drop()
        self._next_open = time.monotonic() + self.reopen_interval
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # a faulty observer must not break the channel
                log.exception("serial channel error callback failed")

    def _drop(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception:
                pass
            self._serial = None

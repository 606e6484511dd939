"""MQTT brokers for tests, benchmarks and the demo.

Two flavours, because they answer different questions:

* ``MosquittoBroker`` runs Debian's real ``mosquitto`` (MQTT 5 and 3.1.1) as a
  subprocess, so tests can kill and restart it to exercise broker outages
  exactly as they happen in the field.
* ``EmbeddedBroker`` runs amqtt in-process (MQTT 3.1.1 only), for quick tests
  on machines without mosquitto and for checking 3.1.1 compatibility.

Both listen on 127.0.0.1 only and default to a free ephemeral port so that
tests can run in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    There is a small race (someone else may grab it before the broker binds),
    which is acceptable for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _find_binary(name: str) -> str | None:
    """Look on PATH, then in the Debian locations (non-root PATHs often lack /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/bin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_mosquitto() -> str:
    """Return the path of the mosquitto binary, or raise RuntimeError saying how to install it."""
    path = _find_binary("mosquitto")
    if path is None:
        raise RuntimeError("mosquitto not found: install Debian's mosquitto package (apt-get install mosquitto)")
    return path


def make_password_file(path: str | os.PathLike, username: str, password: str) -> None:
    """Create (overwrite) a mosquitto password file holding a single user."""
    tool = _find_binary("mosquitto_passwd")
    if tool is None:
        raise RuntimeError("mosquitto_passwd not found: install Debian's mosquitto package (apt-get install mosquitto)")
    subprocess.run([tool, "-b", "-c", os.fspath(path), username, password], check=True, capture_output=True)


class MosquittoBroker:
    """A private mosquitto process on 127.0.0.1 with a generated config.

    The config, log and (optional) persistence database live in a temp dir that
    survives ``stop()``/``restart()`` so a restarted broker keeps its port, its
    log and, with ``persistence=True``, its sessions and queued messages.
    ``close()`` (or leaving the ``with`` block) stops it and deletes the dir.

    ``tls``: dict with cafile, certfile, keyfile and optional require_certificate
    (bool); the listener then speaks TLS only.
    ``password_file``: path made with ``make_password_file``; anonymous clients
    are then refused.
    ``persistence``: keep sessions and queued QoS>0 messages across
    ``restart()``. Off by default: a restart then behaves like a broker crash
    that loses everything in memory.
    """

    def __init__(
        self,
        port: int | None = None,
        tls: dict | None = None,
        password_file: str | os.PathLike | None = None,
        persistence: bool = False,
    ) -> None:
        self.host = HOST
        self.port = port or free_port()
        self.tls = tls
        self.password_file = password_file
        self.persistence = persistence
        self._workdir = tempfile.TemporaryDirectory(prefix="mosquitto-")
        self.dir = Path(self._workdir.name)
        self.config_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self._console_path = self.dir / "console.log"  # errors printed before the log file opens
        self._process: subprocess.Popen | None = None

    def _config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
        ]
        if self.tls:
            lines += [
                f"cafile {self.tls['cafile']}",
                f"certfile {self.tls['certfile']}",
                f"keyfile {self.tls['keyfile']}",
                f"require_certificate {str(bool(self.tls.get('require_certificate', False))).lower()}",
                "use_identity_as_username false",
            ]
        if self.password_file:
            lines += ["allow_anonymous false", f"password_file {os.fspath(self.password_file)}"]
        else:
            lines += ["allow_anonymous true"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/"]
        else:
            lines += ["persistence false"]
        lines += [
            # Benchmarks push bursts far beyond mosquitto's defaults (1000 queued, 20 inflight).
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            # When started as root mosquitto drops to user "mosquitto", which could not
            # write to our temp dir; naming the current user keeps it as is.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of mosquitto's console output and log, for error messages."""
        text = ""
        for path in (self._console_path, self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> "MosquittoBroker":
        """Start mosquitto and block until the port accepts TCP connections."""
        if self.running:
            return self
        binary = find_mosquitto()
        # Readiness is judged by the port accepting connections, so someone else
        # already listening there would make a failed start look like success.
        if _port_accepts_connections(self.host, self.port):
            raise RuntimeError(f"port {self.port} on {self.host} is already in use: cannot start mosquitto there")
        self.config_path.write_text(self._config_text())
        with open(self._console_path, "ab") as console:
            self._process = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"mosquitto exited with code {code} on port {self.port}:\n{self.log_tail()}")
            if _port_accepts_connections(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after 5 s) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop mosquitto with SIGKILL: no clean disconnects, no persistence save."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> "MosquittoBroker":
        """Stop, then start again on the same port (clients see an outage)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop mosquitto and delete its temp dir."""
        self.stop()
        self._workdir.cleanup()

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.host}:{self.port}, running={self.running})"


def quiet_amqtt_logging() -> None:
    """amqtt logs every connection and packet at INFO/DEBUG; keep only warnings.

    amqtt's state machines use the ``transitions`` library, which is just as chatty.
    """
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)


class EmbeddedBroker:
    """An in-process amqtt broker (MQTT 3.1.1 only) on 127.0.0.1.

    amqtt is asyncio-based; it gets its own thread and event loop so that
    synchronous code (tests, paho clients) can use it without caring.
    Anonymous clients are allowed; the $SYS plugin is left out because it
    publishes periodically and pulls in psutil.
    """

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    def _config(self) -> dict:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def _run(self) -> None:
        from amqtt.broker import Broker  # imported here: only needed when an embedded broker is used

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def start_broker() -> None:
            # Broker() must be built inside the running loop: it captures it.
            self._broker = Broker(self._config())
            await self._broker.start()

        try:
            loop.run_until_complete(start_broker())
        except BaseException as exc:  # reported to the thread that called start()
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def start(self) -> "EmbeddedBroker":
        """Start the broker thread and block until the listener is bound."""
        if self._thread is not None:
            return self
        quiet_amqtt_logging()
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name=f"amqtt-broker-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"amqtt broker did not start on port {self.port} within {START_TIMEOUT_S} s")
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"amqtt broker failed to start on port {self.port}: {self._start_error}") from self._start_error
        # No TCP probe here, unlike mosquitto: amqtt logs an ERROR for a connection
        # that closes without CONNECT, and Broker.start() only returns once bound.
        return self

    def stop(self) -> None:
        """Shut the broker down (closes client sessions and the listener) and end its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = self._loop = self._broker = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.host}:{self.port}, running={self._thread is not None})"

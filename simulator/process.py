"""Run a real gateway process (`python -m gateway run`) for tests and benchmarks.

A separate process is what lets a test kill the gateway with SIGKILL at any instant, as a power cut
or an OOM kill would, and check what survives.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml


def write_config(path: Path, *, site_id: str, gateway_id: str, broker_port: int, api_port: int, db_path: Path,
                 token: str = "test-token-0123456789", broker_host: str = "127.0.0.1", extra: dict | None = None,
                 uplink: dict | None = None, devices: list | None = None) -> Path:
    config = {
        "site_id": site_id, "gateway_id": gateway_id,
        "uplink": {"host": broker_host, "port": broker_port, **(uplink or {})},
        "storage": {"path": str(db_path)},
        "api": {"host": "127.0.0.1", "port": api_port, "token": token},
        "devices": devices or [],
        **(extra or {}),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


class GatewayProcess:
    def __init__(self, config_path: Path, api_port: int, log_path: Path | None = None, env: dict | None = None):
        self.config_path = config_path
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.log_path = log_path or config_path.with_suffix(".log")
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "GatewayProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.api_url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not answer within {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode if self.proc else 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> dict:
        return httpx.get(self.api_url + "/v1/health", timeout=5).json()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class RunningGateway:
    """A `Gateway` running in this process: `gateway.run()` on its own loop in a background thread,
    until `stop()` (tests and benchmarks that need the gateway's objects at hand)."""

    def __init__(self, config):
        from gateway.app import Gateway

        self.gateway = Gateway(config)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="gateway", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.gateway.run())
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    def start(self, timeout: float = 30.0) -> "RunningGateway":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.gateway.running.is_set():
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"the gateway did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.gateway.request_stop()
        self.thread.join(30)
        if self.thread.is_alive():
            raise RuntimeError("the gateway did not stop")
        if self.error is not None:
            raise self.error

"""Which driver class serves which device `kind`.

Built-in drivers are imported on first use, so that importing the registry stays cheap and the config
module can ask for the known kinds without importing every driver's dependencies up front.
"""

from __future__ import annotations

import importlib

from .base import Driver

BUILTIN_MODULES = ("drivers.http_ingest", "drivers.camera", "drivers.osdp", "drivers.hikvision", "drivers.zkteco",
                   "drivers.pos_serial", "drivers.pos_tcp", "drivers.pos_webhook", "drivers.barcode_scanner",
                   "drivers.led_sign")

_drivers: dict[str, type[Driver]] = {}
_builtins_loaded = False


def register(driver: type[Driver]) -> type[Driver]:
    """Class decorator: make a driver available under its `kind`."""
    existing = _drivers.get(driver.kind)
    if existing is not None and existing is not driver:
        raise ValueError(f"device kind {driver.kind!r} is already served by {existing.__name__}")
    _drivers[driver.kind] = driver
    return driver


def unregister(kind: str) -> None:
    _drivers.pop(kind, None)


def drivers() -> dict[str, type[Driver]]:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True
    return dict(_drivers)


def driver_for(kind: str) -> type[Driver]:
    try:
        return drivers()[kind]
    except KeyError:
        raise KeyError(f"no driver for device kind {kind!r}") from None

"""Virtual devices: each stands in for a real one on its real wire protocol.

`virtual_device_for(device_config, gateway_endpoints)` returns the simulator for a configured device,
so that the demo and the tests can bring a whole site to life from its config.
"""

from __future__ import annotations

from typing import Callable

from .base import GatewayEndpoints, VirtualDevice
from .parking import ParkingSystem

# kind -> factory(device_config, endpoints); later device kinds add themselves here.
FACTORIES: dict[str, Callable[..., VirtualDevice]] = {
    "http_ingest": lambda device, endpoints, **kw: ParkingSystem(device.id, endpoints, **kw),
}


def virtual_device_for(device, endpoints: GatewayEndpoints, **kwargs) -> VirtualDevice | None:
    factory = FACTORIES.get(device.kind)
    return factory(device, endpoints, **kwargs) if factory else None


__all__ = ["GatewayEndpoints", "VirtualDevice", "ParkingSystem", "virtual_device_for"]

"""A local system that hands its events to the gateway over `POST /v1/ingest`.

The events themselves arrive through the shared ingest endpoint; this driver only tracks whether the
system is alive: online while it has posted within `stale_after`, offline after that.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from pydantic import Field

from gateway.validation import Duration

from .base import DeviceConfig, Driver
from .registry import register


class HttpIngestSettings(DeviceConfig):
    kind: Literal["http_ingest"]
    stale_after: Duration = Field(300.0, gt=0, description="offline when nothing was posted for this long")


@register
class HttpIngestDriver(Driver):
    kind = "http_ingest"
    Settings = HttpIngestSettings

    async def run(self) -> None:
        stale_after = self.settings.stale_after
        while True:
            seen = self.ctx.last_activity()
            if seen is None:
                self.ctx.set_offline("nothing posted yet")
            elif time.monotonic() - seen > stale_after:
                self.ctx.set_offline(f"nothing posted for {stale_after:g}s")
            else:
                self.ctx.set_online()
            await asyncio.sleep(min(1.0, stale_after / 4))

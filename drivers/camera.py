"""IP cameras (RTSP, HTTP MJPEG) and video files: capture only.

The driver keeps the camera's newest frame available to the visit service (through the frame hub)
and reports the camera online, stalled or unreachable. It never looks inside a frame: detection,
tracking and counting are the visit service's business (gateway/visits.py).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from gateway.vision.settings import AnalyticsSettings
from gateway.validation import Duration

from .base import DeviceConfig, Driver
from .registry import register


class CameraSettings(DeviceConfig):
    kind: Literal["camera"]
    url: str = Field(..., min_length=1,
                     description="rtsp://..., http(s)://... MJPEG, or a video file path (file://... or plain)")
    fps: float = Field(10.0, gt=0, le=60, description="frames per second to analyse")
    loop: bool = Field(False, description="video files: start again at the end")
    realtime: bool = Field(True, description="video files: play at the file's own speed, as a camera would")
    open_timeout: Duration = 10.0
    read_timeout: Duration = 5.0
    stall_after: Duration = Field(5.0, gt=0, description="no frame for this long: reopen the stream")
    analytics: AnalyticsSettings | None = Field(None, description="people counting; without it, capture only")


@register
class CameraDriver(Driver):
    kind = "camera"
    Settings = CameraSettings

    async def run(self) -> None:
        from gateway.vision.capture import FrameGrabber  # OpenCV loads only when a camera runs

        settings: CameraSettings = self.settings  # type: ignore[assignment]

        def on_state(state: str, error: str | None) -> None:  # called in the grabber's thread
            if state == "streaming":
                self.ctx.set_online()
            elif state in ("connecting", "stalled", "ended"):
                self.ctx.set_offline(error or state)

        grabber = FrameGrabber(settings.url, open_timeout=settings.open_timeout,
                               read_timeout=settings.read_timeout, stall_after=settings.stall_after,
                               loop=settings.loop, realtime=settings.realtime, on_state=on_state)
        grabber.start()
        self.ctx.offer_frames(grabber)
        try:
            while grabber.alive or grabber.state == "ended":  # a file without `loop` just stays ended
                await asyncio.sleep(0.5)
            raise RuntimeError(f"capture thread stopped: {grabber.last_error or 'no reason given'}")
        finally:
            self.ctx.offer_frames(None)
            await asyncio.to_thread(grabber.stop)

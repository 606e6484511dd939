"""A virtual face-gate camera: real face photos "walking up" to the gate, served as MJPEG over HTTP.

Each visitor is a photo (the shared celebrities_13 set, ../shared/data/faces) composited on a plain
background: it appears small (a face too small to recognise), grows over `approach_s` as the person
walks up (apparent size grows geometrically, as 1/distance does at a steady pace), is held for
`hold_s` at the gate, and is gone for `gap_s` before the next visitor. The visitors are played in
order, again and again when serving.

`frames(visitors, fps)` is the pure generator (numpy BGR frames, no HTTP), for tests and the
benchmark. `GateCamera` renders one round of the visitors into a temporary MJPEG AVI and serves it
with simulator.camera.MjpegCamera (looping), so the gateway reads it over the same HTTP path as
any camera, with the same stall / drop / power-cut controls (`gate.camera`).

    .venv/bin/python -m simulator.gate_camera --identity id00 --identity id05 --port 8554
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .camera import MjpegCamera

ROOT = Path(__file__).resolve().parents[1]
CELEBRITIES = ROOT.parent / "shared" / "data" / "faces" / "celebrities_13"
CELEBRITY_LISTING = CELEBRITIES / "identities_from_master_and_pivot_csv.txt"
BACKGROUND_BGR = (182, 178, 172)  # a plain light grey wall


@dataclass(frozen=True)
class WalkUp:
    """How a visitor approaches: the photo's height as a share of the frame's, from `start` to `end`."""

    approach_s: float = 1.5
    hold_s: float = 0.5
    gap_s: float = 0.5
    start: float = 0.10  # far away: in the celebrity photos the face is 35-65 % of the photo's height
    end: float = 0.85  # at the gate

    def frames_of(self, fps: float) -> tuple[int, int, int]:
        """(approach, hold, gap) in frames at `fps`."""
        return (max(2, round(self.approach_s * fps)), max(0, round(self.hold_s * fps)), max(0, round(self.gap_s * fps)))


def read_photo(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read the photo {path}")
    return image


def composite(photo: np.ndarray, height_share: float, size: tuple[int, int],
              background: tuple[int, int, int] = BACKGROUND_BGR) -> np.ndarray:
    """The photo scaled to `height_share` of the frame's height (narrowed to fit its width), centred
    horizontally, its bottom a little below the frame's middle rising to the bottom edge as it grows."""
    width, height = size
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = background
    scale = min(height_share * height / photo.shape[0], width / photo.shape[1])
    new_w, new_h = max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))
    resized = cv2.resize(photo, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x = (width - new_w) // 2
    bottom = round(height * (0.6 + 0.4 * min(1.0, height_share)))  # nearer: lower in the frame
    y = min(max(0, bottom - new_h), height - new_h)
    frame[y:y + new_h, x:x + new_w] = resized
    return frame


def walk_up(photo: np.ndarray, fps: float, size: tuple[int, int] = (640, 480),
            walk: WalkUp = WalkUp()) -> Iterator[np.ndarray]:
    """One visitor's frames: approach (growing), hold (at the gate), gap (nobody)."""
    approach, hold, gap = walk.frames_of(fps)
    for i in range(approach):
        t = i / (approach - 1)
        yield composite(photo, walk.start * (walk.end / walk.start) ** t, size)
    at_gate = composite(photo, walk.end, size)
    for _ in range(hold):
        yield at_gate.copy()
    empty = np.empty((size[1], size[0], 3), np.uint8)
    empty[:] = BACKGROUND_BGR
    for _ in range(gap):
        yield empty.copy()


def frames(visitors: Iterable[str | Path | np.ndarray], fps: float = 10.0, size: tuple[int, int] = (640, 480),
           walk: WalkUp = WalkUp(), loop: bool = False) -> Iterator[np.ndarray]:
    """Frames of the visitors (photo paths or BGR images) walking up one after another; `loop`
    starts over after the last (the generator is then endless)."""
    photos = [v if isinstance(v, np.ndarray) else read_photo(v) for v in visitors]
    if not photos:
        raise ValueError("no visitors")
    while True:
        for photo in photos:
            yield from walk_up(photo, fps, size, walk)
        if not loop:
            return


def frames_per_visitor(fps: float, walk: WalkUp = WalkUp()) -> int:
    return sum(walk.frames_of(fps))


def write_video(path: str | Path, frames_: Iterable[np.ndarray], fps: float, quality: int = 95) -> Path:
    """Frames into an MJPEG AVI (OpenCV's own encoder, no codec needed on the machine)."""
    path = Path(path)
    writer = None
    try:
        for frame in frames_:
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise RuntimeError(f"cannot write {path}")
                writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError("no frames")
    return path


class GateCamera:
    """The visitors walking up, one round rendered to a temporary video, served looping as MJPEG.

    `url` is the stream (http://host:port/stream.mjpg); `camera` is the underlying MjpegCamera for
    its controls (stall, drop_clients, stop/start). `stop()` also removes the temporary video.
    """

    def __init__(self, visitors: Sequence[str | Path | np.ndarray], fps: float = 10.0,
                 size: tuple[int, int] = (640, 480), walk: WalkUp = WalkUp(), host: str = "127.0.0.1",
                 port: int | None = None):
        self.visitors = list(visitors)
        self.fps = float(fps)
        self.walk = walk
        self._dir = Path(tempfile.mkdtemp(prefix="gate-camera-"))
        video = write_video(self._dir / "visitors.avi", frames(self.visitors, fps, size, walk), fps)
        self.camera = MjpegCamera(video, host=host, port=port, fps=fps, loop=True)
        self.round_s = len(self.visitors) * frames_per_visitor(fps, walk) / fps  # one pass of every visitor

    @property
    def url(self) -> str:
        return self.camera.url

    def start(self) -> GateCamera:
        self.camera.start()
        return self

    def stop(self) -> None:
        self.camera.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> GateCamera:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def identity_photos(listing: str | Path = CELEBRITY_LISTING) -> dict[str, list[Path]]:
    """{identity: photos} of the shared celebrities_13 listing."""
    from gateway.faces.calibrate import load_listing

    return load_listing(listing)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A virtual face-gate camera (MJPEG over HTTP).")
    parser.add_argument("photos", nargs="*", help="visitor photos, in order")
    parser.add_argument("--identity", action="append", default=[],
                        help="a celebrities_13 identity (e.g. id00): its first photo walks up")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    visitors = list(args.photos)
    if args.identity:
        photos = identity_photos()
        visitors += [str(photos[i][0]) for i in args.identity]
    if not visitors:
        visitors = [str(p[0]) for p in identity_photos().values()]
    with GateCamera(visitors, fps=args.fps, host=args.host, port=args.port) as gate:
        print(f"gate camera: {gate.url} ({len(visitors)} visitors, {gate.round_s:.1f} s a round)", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

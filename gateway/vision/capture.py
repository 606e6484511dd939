"""Frame capture for one camera: always the newest frame, never a queue of old ones.

A people counter must look at what the camera sees now. OpenCV and FFmpeg buffer a stream and hand
out its frames in order, so a reader that falls behind sees the past, later and later. A
`FrameGrabber` therefore reads in its own thread as fast as the source delivers and keeps only the
newest frame; consumers ask for it (`latest`) or wait for one newer than theirs (`wait_next`) and
skip what they could not keep up with. `FpsLimiter` then picks the frames worth analysing.

Sources (all through OpenCV's FFmpeg backend, which `open_capture` opens):

* ``rtsp://...``: forced to RTP over TCP (see "TCP transport" below);
* ``http(s)://...``: MJPEG over HTTP (``multipart/x-mixed-replace``), as cheap cameras serve it;
* a video file: a plain path or a ``file://`` URL. ``realtime=True`` plays it at its own pace (what
  a live camera would do; the demo and simulator use it), ``realtime=False`` as fast as it decodes
  (replays, tests); ``loop=True`` starts again at the end.

How OpenCV 5.0's FFmpeg backend really behaves (checked against opencv-python-headless 5.0.0):

* Timeouts. The open and read timeouts are FFmpeg interrupt callbacks that OpenCV arms only from
  the parameter list given when opening: ``VideoCapture(url, CAP_FFMPEG, [CAP_PROP_OPEN_TIMEOUT_MSEC,
  ms, CAP_PROP_READ_TIMEOUT_MSEC, ms])``. ``cap.set(CAP_PROP_OPEN_TIMEOUT_MSEC, ...)`` before
  ``open()`` returns False and changes nothing; without the list both are 30 s. The open timeout
  covers connect, handshake and stream probing, so a camera that accepts the connection but sends
  nothing fails the open after it; the read timeout makes a ``read()`` on a frozen stream return
  False instead of blocking. Neither covers a local file.
* TCP transport. OpenCV passes ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (``key;value|key;value``) to FFmpeg
  and reads it with getenv at every open, process-wide. Unset, OpenCV asks for ``rtsp_flags
  prefer_tcp``: RTP over TCP first, then over UDP, then multicast. Set, it replaces that default
  entirely. We set ``rtsp_transport;tcp`` (TCP only: UDP loses packets through mall switches and
  NAT, and smears frames) when this module is imported, before any thread opens a capture, because
  changing the environment while another thread's FFmpeg reads it is a race. Options an operator
  already put in the variable are kept, an ``rtsp_transport`` of their own included.
* Timestamps. ``CAP_PROP_POS_MSEC`` is the frame's presentation time for files and RTSP; for MJPEG
  over HTTP FFmpeg invents a 25 fps clock (``CAP_PROP_FPS`` says 25 whatever the camera sends and
  ``CAP_PROP_FRAME_COUNT`` is -2**63), so `Frame.pts` is None there. The last frame of a file
  (flushed from the decoder) reports 0.
* Frame rates. ``CAP_PROP_FPS`` is the container's claim; the shared busy_hall AVI claims 50 fps but
  its frames are 40 ms apart and half its claimed ``CAP_PROP_FRAME_COUNT`` (682) ever decodes.
  Realtime playback therefore follows the frames' timestamps, falling back to the claimed rate.
* Failures print ``[ WARN ...]`` lines (FFmpeg's own and OpenCV's) on stderr; OpenCV returns no
  reason, so `open_capture` finds one itself (a TCP connect to the camera) for `CaptureError`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import numpy as np

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
FALLBACK_FPS = 25.0

State = Literal["connecting", "streaming", "stalled", "ended", "stopped"]
StateCallback = Callable[[str, "str | None"], None]


class CaptureError(RuntimeError):
    """A source could not be opened or read; the message says which source and why."""


# ------------------------------------------------------------------------------------ opening


def _force_rtsp_over_tcp() -> None:
    """Ask FFmpeg for RTSP over TCP, keeping whatever else the variable holds (see the module doc)."""
    current = os.environ.get(FFMPEG_OPTIONS_ENV, "")
    keys = {pair.split(";", 1)[0].strip() for pair in current.split("|") if pair}
    if "rtsp_transport" not in keys:
        os.environ[FFMPEG_OPTIONS_ENV] = f"{current}|rtsp_transport;tcp" if current else "rtsp_transport;tcp"


_force_rtsp_over_tcp()


def source_kind(source: str) -> Literal["rtsp", "http", "file"]:
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        return "rtsp"
    if scheme in ("http", "https"):
        return "http"
    return "file"


def redact_url(source: str) -> str:
    """The source without its password, fit for logs and status events."""
    parts = urlsplit(source)
    if parts.password is None:
        return source
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def file_path(source: str) -> Path:
    """A file source's path: plain, or from a file:// URL."""
    if source.lower().startswith("file://"):
        return Path(unquote(urlsplit(source).path))
    return Path(source)


def _network_problem(source: str, timeout: float) -> str | None:
    """Why the camera's host cannot be reached (unknown host, refused, no answer), or None if it can."""
    parts = urlsplit(source)
    host = parts.hostname
    if not host:
        return "the URL names no host"
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    except ValueError:
        return "the URL's port is not a number"
    try:
        with socket.create_connection((host, port), timeout=max(0.1, timeout)):
            return None
    except socket.gaierror as exc:
        return f"unknown host {host!r} ({exc.strerror})"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (camera off, or wrong port)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc.strerror or exc})"


def open_capture(source: str, open_timeout: float, read_timeout: float) -> cv2.VideoCapture:
    """Open a camera URL or a video file through FFmpeg with the given timeouts (seconds).

    Raises CaptureError saying why when nothing decodable comes out of the source.
    """
    kind = source_kind(source)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, int(open_timeout * 1000)),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, int(read_timeout * 1000))]
    if kind == "file":
        path = file_path(source)
        if not path.is_file():
            raise CaptureError(f"video file {path} not found" if not path.exists() else f"{path} is not a file")
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise CaptureError(f"cannot decode {path}: not a video FFmpeg can read")
        return capture

    started = time.monotonic()
    problem = _network_problem(source, open_timeout)
    if problem:
        raise CaptureError(f"cannot open {redact_url(source)}: {problem}")
    remaining = max(0.5, open_timeout - (time.monotonic() - started))
    params[1] = int(remaining * 1000)
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not capture.isOpened():
        capture.release()
        raise CaptureError(f"cannot open {redact_url(source)}: the host answers but gave no video within "
                           f"{open_timeout:g} s (wrong path or credentials, a stream that is not video, "
                           f"or a frozen camera)")
    return capture


# -------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One decoded image. Shared by every consumer, so its array is read-only: copy to draw on it."""

    image: np.ndarray  # BGR, uint8, H x W x 3
    index: int  # frames read since the grabber started, 1-based; never reused while it runs
    ts: float  # wall-clock time it was read (time.time())
    pts: float | None  # position in the source in seconds, when the source has real timestamps


class ReopenBackoff:
    """Delays between reopen attempts: `initial` doubling up to `maximum`, times a random 0.8-1.0
    so the cameras of a site that lost its switch do not all knock again at the same instant."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, jitter: float = 0.2):
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self.failures = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.failures, 32)))
        self.failures += 1
        return base * random.uniform(1.0 - self.jitter, 1.0)

    def reset(self) -> None:
        self.failures = 0


class FrameGrabber:
    """Reads one source in a daemon thread, keeps its newest frame, reopens it when it fails.

    State: "connecting" (started, no frame yet), "streaming" (frames arriving), "stalled" (no frame
    for `stall_after` seconds, a failed read or a failed open: reopening with backoff, `last_error`
    says why), "ended" (a file without `loop` reached its end), "stopped" (stop() was called).
    `on_state(state, error)` is called, from the grabber's thread or the one calling stop(), each
    time the state changes.

    Stall detection rides on FFmpeg's read timeout, set to min(read_timeout, stall_after): a read on
    a frozen stream returns after that long and the source is reopened. Nothing else may release
    the capture while a read is blocked in it (FFmpeg would read freed memory), so stop() does not:
    it returns after `join_timeout` at most and the thread releases the capture when its read ends.
    """

    def __init__(self, source: str, *, open_timeout: float = 10.0, read_timeout: float = 5.0,
                 stall_after: float = 5.0, loop: bool = False, realtime: bool = True,
                 on_state: StateCallback | None = None, backoff: ReopenBackoff | None = None, name: str | None = None):
        self.source = source
        self.kind = source_kind(source)
        self.open_timeout = open_timeout
        self.read_timeout = min(read_timeout, stall_after)
        self.stall_after = stall_after
        self.loop = loop
        self.realtime = realtime
        self.on_state = on_state
        self.backoff = backoff or ReopenBackoff()
        self.name = name or redact_url(source)
        self.frames_read = 0
        self.reopens = 0  # attempts to open the source again after it failed
        self.read_errors = 0  # reads that failed or timed out (a file's normal end is not one)
        self.retry_delay = 0.0  # the last backoff delay chosen
        self.source_fps: float | None = None  # claimed frame rate once opened; None for HTTP (module doc)
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the last frame
        self._state: State = "stopped"
        self._last_error: str | None = None
        self._latest: Frame | None = None
        self._changed = threading.Condition()  # guards state and the latest frame; notified on both
        self._reporting = threading.RLock()  # on_state calls happen one at a time, in order of the changes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------- consumers

    @property
    def state(self) -> State:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def alive(self) -> bool:
        """The reading thread is running (false once ended or stopped)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def latest(self) -> Frame | None:
        return self._latest

    def wait_next(self, after_index: int, timeout: float) -> Frame | None:
        """The newest frame with an index above `after_index`, waiting up to `timeout` seconds for it.

        None if none came in time, or at once when the grabber has ended or stopped with nothing newer.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                frame = self._latest
                if frame is not None and frame.index > after_index:
                    return frame
                if self._state in ("ended", "stopped"):
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    # ------------------------------------------------------------------------------ control

    def start(self) -> "FrameGrabber":
        if self._thread is not None:
            raise RuntimeError("a FrameGrabber starts once; make a new one")
        self._set_state("connecting", None)
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, join_timeout: float = 2.0) -> None:
        """Stop reading. Returns within `join_timeout` even if a read is blocked in FFmpeg."""
        self._stop.set()
        self._set_state("stopped", None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(join_timeout)

    def __enter__(self) -> "FrameGrabber":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- internals

    def _set_state(self, state: State, error: str | None) -> None:
        with self._reporting:
            with self._changed:
                if self._stop.is_set() and state != "stopped":
                    return  # a read that ends after stop() must not bring the grabber back
                if error is not None:
                    self._last_error = error  # kept after recovery: the last thing that went wrong
                changed = state != self._state
                self._state = state
                self._changed.notify_all()
            if changed and self.on_state is not None:
                try:
                    self.on_state(state, error)
                except Exception:  # a listener's bug must not kill capture
                    log.exception("capture %s: on_state callback failed", self.name)

    def _fail(self, error: str) -> None:
        """Record a failure and sleep the backoff; the caller then reopens."""
        # A camera that stays off must not fill the log: a repeated reason is only debug.
        log.log(logging.DEBUG if error == self._last_error else logging.WARNING, "capture: %s", error)
        self._set_state("stalled", error)
        self.retry_delay = self.backoff.next()
        self._stop.wait(self.retry_delay)

    def _open(self) -> cv2.VideoCapture | None:
        try:
            capture = open_capture(self.source, self.open_timeout, self.read_timeout)
        except CaptureError as exc:
            self._fail(str(exc))
            return None
        except cv2.error as exc:  # OpenCV itself refused (a malformed URL, say)
            self._fail(f"cannot open {redact_url(self.source)}: {exc}")
            return None
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.source_fps = fps if fps and fps > 0 and self.kind != "http" else None
        return capture

    def _run(self) -> None:
        capture: cv2.VideoCapture | None = None
        pacer = _Pacer(self._stop)
        since_open = 0
        first_open = True
        try:
            while not self._stop.is_set():
                if capture is None:
                    if not first_open:
                        self.reopens += 1
                    first_open = False
                    capture = self._open()
                    if capture is None:
                        continue
                    since_open = 0
                    pacer.restart()
                ok, image = capture.read()
                if self._stop.is_set():
                    break
                if not ok or image is None:
                    capture.release()
                    capture = None
                    if self.kind == "file" and since_open > 0:  # the file's end
                        if self.loop:
                            first_open = True  # a rewind, not a reopen after a failure
                            continue
                        self._set_state("ended", None)
                        return
                    self.read_errors += 1
                    if self.kind == "file":
                        self._fail(f"{file_path(self.source)} opened but no frame could be decoded")
                    else:
                        self._fail(f"no frame from {redact_url(self.source)} for {self.read_timeout:g} s "
                                   f"(stream frozen or connection lost)")
                    continue
                since_open += 1
                pts = self._pts(capture, since_open)
                if self.realtime and self.kind == "file" and not pacer.wait_for(pts, self.source_fps):
                    break
                self._publish(image, pts)
                self.backoff.reset()
                if self._state != "streaming":
                    self._set_state("streaming", None)
        except Exception as exc:  # never die silently: the driver sees `alive` go false with a reason
            log.exception("capture %s: reader failed", self.name)
            self._set_state("stalled", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if capture is not None:
                capture.release()

    def _pts(self, capture: cv2.VideoCapture, since_open: int) -> float | None:
        if self.kind == "http":
            return None  # FFmpeg's MJPEG demuxer invents the timestamps (see module doc)
        msec = capture.get(cv2.CAP_PROP_POS_MSEC)
        if msec < 0 or (msec == 0 and since_open > 1):
            return None  # 0 after the first frame: a frame flushed from the decoder, time unknown
        return msec / 1000.0

    def _publish(self, image: np.ndarray, pts: float | None) -> None:
        image.flags.writeable = False
        with self._changed:
            self.frames_read += 1
            self._latest = Frame(image=image, index=self.frames_read, ts=time.time(), pts=pts)
            self.frame_size = (image.shape[1], image.shape[0])
            self._changed.notify_all()


class _Pacer:
    """Plays a file at its own speed: each frame is released when its timestamp comes due.

    Follows the timestamps (not the container's claimed fps, which can be wrong); a frame without
    one comes one claimed frame interval after the previous. Never bursts to catch up after a hiccup.
    """

    def __init__(self, stop: threading.Event):
        self._stop = stop
        self._anchor: tuple[float, float] | None = None  # (monotonic time, media time) of the first frame
        self._media = 0.0

    def restart(self) -> None:
        self._anchor = None

    def wait_for(self, pts: float | None, fps: float | None) -> bool:
        """Sleep until the frame is due; False if stop() came first."""
        step = 1.0 / (fps or FALLBACK_FPS)
        media = pts if pts is not None else self._media + step
        if self._anchor is None or media < self._media:
            self._anchor = (time.monotonic(), media)
        self._media = media
        due = self._anchor[0] + (media - self._anchor[1])
        delay = due - time.monotonic()
        if delay < -1.0:  # far behind (a slow machine, a debugger): start counting from here
            self._anchor = (time.monotonic(), media)
            return not self._stop.is_set()
        return not self._stop.wait(delay) if delay > 0 else not self._stop.is_set()


# ------------------------------------------------------------------------------------- pacing


class FpsLimiter:
    """Picks which frames to analyse so that at most `target_fps` are processed per second.

    `due(now)` answers for one frame and counts it as processed or skipped; over time the processed
    rate holds at target_fps (the schedule advances by whole intervals, so frames arriving at 10 fps
    with a target of 4 give 4, not 3.3). A falsy target processes every frame.
    """

    RATE_WINDOW_S = 5.0

    def __init__(self, target_fps: float | None):
        self.target_fps = target_fps
        self.interval = 1.0 / target_fps if target_fps and target_fps > 0 else 0.0
        self.window = max(self.RATE_WINDOW_S, 3 * self.interval)
        self.processed = 0
        self.skipped = 0
        self._next_due: float | None = None
        self._recent: deque[float] = deque(maxlen=10_000)  # times of processed frames in the last window

    def due(self, now: float) -> bool:
        if self._next_due is not None and self._next_due - now > self.interval + 1e-9:
            self._next_due = None  # the clock went back (a replay started over): start afresh
        if self._next_due is not None and now + 1e-9 < self._next_due:
            self.skipped += 1
            return False
        if self._next_due is None or now - self._next_due >= self.interval:
            self._next_due = now + self.interval  # first frame, or fell behind: no burst to catch up
        else:
            self._next_due += self.interval
        self.processed += 1
        self._recent.append(now)
        self._forget_before(now - self.window)
        return True

    def rate(self, now: float | None = None) -> float:
        """Frames processed per second over the last window (5 s or 3 intervals), falling to 0 when
        frames stop. `now` on the clock given to due(); time.monotonic() by default."""
        now = time.monotonic() if now is None else now
        self._forget_before(now - self.window)
        if len(self._recent) < 2 or now <= self._recent[0]:
            return 0.0
        return (len(self._recent) - 1) / (now - self._recent[0])

    def _forget_before(self, cutoff: float) -> None:
        while self._recent and self._recent[0] <= cutoff:
            self._recent.popleft()

"""A virtual IP camera: a video file served as MJPEG over HTTP, like a cheap camera's /stream.mjpg.

It lets tests and the demo put frames through the same network path a real camera uses (an HTTP
connection FFmpeg has to open, read, time out on and reopen), and it misbehaves on request the way
cameras do in the field: `stall()` freezes it (connections stay open, nothing arrives),
`drop_clients()` cuts every connection (a network drop), `stop()`/`start()` switch it off and on
again on the same port (a power cut).

One ticker thread decodes the file at the camera's frame rate and JPEG-encodes each frame once; every
client's connection thread sends the newest encoded frame and waits for the next one. A slow client
therefore skips frames rather than queueing them, as a real camera's encoder does.

The camera is self-contained on purpose (OpenCV and the standard library only): a stand-in that
shared code with the gateway's capture would hide the very bugs it is there to reveal.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

log = logging.getLogger(__name__)

BOUNDARY = "frame"
STREAM_PATH = "/stream.mjpg"
SNAPSHOT_PATH = "/snapshot.jpg"
FALLBACK_FPS = 25.0
CLIENT_WAIT_S = 0.25  # how often a waiting connection looks at the camera's state (stop, drop, end)
SEND_TIMEOUT_S = 10.0  # a client that takes no data for this long is dropped


def file_fps(capture: cv2.VideoCapture) -> float:
    """The rate the file really plays at, read from the first two frames' timestamps.

    CAP_PROP_FPS is only the container's claim; the shared busy_hall AVI claims 50 fps while its
    frames are 40 ms apart. Rewinds the capture to the start.
    """
    times = []
    for _ in range(2):
        ok, _ = capture.read()
        if not ok:
            break
        times.append(capture.get(cv2.CAP_PROP_POS_MSEC))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    if len(times) == 2 and times[1] > times[0]:
        return 1000.0 / (times[1] - times[0])
    claimed = capture.get(cv2.CAP_PROP_FPS)
    return claimed if claimed and claimed > 0 else FALLBACK_FPS


class MjpegCamera:
    """Serves `video_path` at http://host:port/stream.mjpg (multipart MJPEG) and /snapshot.jpg.

    `fps` defaults to the file's own rate; `loop=False` ends every stream at the end of the file
    (the connection is closed) and /snapshot.jpg keeps answering with the last frame.
    """

    def __init__(self, video_path: str | Path, host: str = "127.0.0.1", port: int | None = None,
                 fps: float | None = None, loop: bool = True, jpeg_quality: int = 80):
        self.video_path = Path(video_path)
        probe = cv2.VideoCapture(str(self.video_path), cv2.CAP_FFMPEG)
        try:
            if not probe.isOpened():
                raise FileNotFoundError(f"cannot open video {self.video_path}")
            self.frame_size = (int(probe.get(cv2.CAP_PROP_FRAME_WIDTH)), int(probe.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            self.fps = float(fps) if fps else file_fps(probe)
        finally:
            probe.release()
        self.host = host
        self.port = port  # None until the first start() binds a free port; kept across stop/start
        self.loop = loop
        self.jpeg_quality = int(jpeg_quality)
        self.frames_encoded = 0  # ticks: frames decoded and encoded (once each, whatever the clients)
        self.parts_sent = 0  # JPEG parts written to stream clients, all clients together
        self.connections = 0  # stream connections accepted since construction
        self._changed = threading.Condition()  # guards everything below; notified on each new frame
        self._jpeg: bytes | None = None
        self._seq = 0
        self._ended = False
        self._stalled_until = 0.0
        self._generation = 0  # bumped by drop_clients()/stop(): older connections end
        self._clients: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._running = threading.Event()  # set while switched on
        self._halt = threading.Event()  # set by stop(): what the ticker's pacing waits on

    # ------------------------------------------------------------------------------ controls

    @property
    def url(self) -> str:
        """The MJPEG stream's URL (the port is known once the camera was started)."""
        return f"http://{self.host}:{self._bound_port()}{STREAM_PATH}"

    @property
    def snapshot_url(self) -> str:
        return f"http://{self.host}:{self._bound_port()}{SNAPSHOT_PATH}"

    @property
    def clients(self) -> int:
        """Stream connections open right now."""
        with self._changed:
            return len(self._clients)

    def start(self) -> "MjpegCamera":
        """Switch the camera on (again on the same port after a stop()); frames start from the file's start."""
        if self._running.is_set():
            return self
        server = ThreadingHTTPServer((self.host, self.port or 0), self._handler_class())
        server.daemon_threads = True
        self.port = server.server_address[1]
        with self._changed:
            self._jpeg, self._ended, self._stalled_until = None, False, 0.0
        self._server = server
        self._halt.clear()
        self._running.set()
        self._ticker = threading.Thread(target=self._tick, name=f"camera-{self.port}-ticker", daemon=True)
        self._ticker.start()
        self._serve_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                              name=f"camera-{self.port}-http", daemon=True)
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Switch the camera off: the port stops answering and every connection is closed."""
        if not self._running.is_set():
            return
        self._running.clear()
        self._halt.set()
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        self.drop_clients()
        for thread in (self._serve_thread, self._ticker):
            if thread is not None:
                thread.join(5.0)

    def stall(self, seconds: float) -> None:
        """Freeze for `seconds`: connections stay open (new ones are answered) but no frame is sent."""
        with self._changed:
            self._stalled_until = time.monotonic() + seconds

    def drop_clients(self) -> int:
        """Close every stream connection now, as a network drop would; returns how many were closed."""
        with self._changed:
            self._generation += 1
            clients = list(self._clients)
            self._changed.notify_all()
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in sendall on it
            except OSError:
                pass
        return len(clients)

    def __enter__(self) -> "MjpegCamera":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _bound_port(self) -> int:
        if self.port is None:
            raise RuntimeError("the camera has no port yet: start() it first or pass port=")
        return self.port

    # -------------------------------------------------------------------------------- ticker

    def _tick(self) -> None:
        """Decode, encode once, publish; paced at fps (late ticks are dropped, never bunched up)."""
        capture = cv2.VideoCapture(str(self.video_path), cv2.CAP_FFMPEG)
        interval = 1.0 / self.fps
        next_at = time.monotonic()
        try:
            while self._running.is_set():
                with self._changed:
                    stalled_for = self._stalled_until - time.monotonic()
                if stalled_for > 0:
                    self._halt.wait(min(stalled_for, CLIENT_WAIT_S))
                    next_at = time.monotonic()
                    continue
                ok, image = capture.read()
                if not ok:
                    if not self.loop:
                        with self._changed:
                            self._ended = True
                            self._changed.notify_all()
                        return
                    capture.release()  # reopening is the one rewind every container handles
                    capture = cv2.VideoCapture(str(self.video_path), cv2.CAP_FFMPEG)
                    ok, image = capture.read()
                    if not ok:
                        log.error("virtual camera %s: %s yields no frame", self.port, self.video_path)
                        return
                encoded, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if encoded:
                    with self._changed:
                        self._jpeg = buffer.tobytes()
                        self._seq += 1
                        self.frames_encoded += 1
                        self._changed.notify_all()
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < -interval:  # fell behind (a busy machine): carry on from now
                    next_at, delay = time.monotonic(), 0.0
                if delay > 0:
                    self._halt.wait(delay)
        finally:
            capture.release()

    def _next_jpeg(self, after_seq: int, generation: int) -> tuple[int, bytes] | None:
        """The newest frame after `after_seq`, waiting for it; None once this connection must end."""
        with self._changed:
            while True:
                if not self._running.is_set() or generation != self._generation:
                    return None
                stalled = self._stalled_until > time.monotonic()
                if self._jpeg is not None and self._seq > after_seq and not stalled:
                    return self._seq, self._jpeg
                if self._ended:
                    return None
                self._changed.wait(CLIENT_WAIT_S)

    def _latest_jpeg(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._jpeg is None and self._running.is_set() and not self._ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._jpeg

    # ---------------------------------------------------------------------------------- HTTP

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            timeout = SEND_TIMEOUT_S
            server_version = "VirtualCamera/1.0"

            def do_GET(self) -> None:  # the stdlib's name for it
                path = self.path.split("?", 1)[0]
                if path == STREAM_PATH:
                    camera._serve_stream(self)
                elif path == SNAPSHOT_PATH:
                    camera._serve_snapshot(self)
                else:
                    self.send_error(404, "only /stream.mjpg and /snapshot.jpg here")

            def log_message(self, format: str, *args) -> None:  # the stdlib's signature
                log.debug("virtual camera %s: " + format, camera.port, *args)

        return Handler

    def _serve_stream(self, handler: BaseHTTPRequestHandler) -> None:
        with self._changed:
            generation = self._generation
            self._clients.add(handler.connection)
            self.connections += 1
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            handler.send_header("Cache-Control", "no-cache, no-store")
            handler.send_header("Connection", "close")
            handler.end_headers()
            seq = 0
            while True:
                frame = self._next_jpeg(seq, generation)
                if frame is None:
                    return
                seq, jpeg = frame
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n").encode("ascii")
                handler.wfile.write(head + jpeg + b"\r\n")  # one sendall per part
                with self._changed:
                    self.parts_sent += 1
        except OSError:  # the client went away, or drop_clients() shut the socket
            pass
        finally:
            handler.close_connection = True
            with self._changed:
                self._clients.discard(handler.connection)

    def _serve_snapshot(self, handler: BaseHTTPRequestHandler) -> None:
        jpeg = self._latest_jpeg(timeout=5.0)
        if jpeg is None:
            handler.send_error(503, "no frame yet")
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(jpeg)))
        handler.send_header("Cache-Control", "no-cache, no-store")
        handler.end_headers()
        try:
            handler.wfile.write(jpeg)
        except OSError:
            pass

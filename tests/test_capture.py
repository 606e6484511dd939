"""Frame capture: files, the virtual MJPEG camera misbehaving, RTSP transport, and the fps limiter.

No assertion here limits wall-clock time; conditions are awaited with generous deadlines.
"""

from __future__ import annotations

import gc
import itertools
import os
import socket
import threading
import time
import weakref
from typing import Callable

import cv2
import pytest

from gateway.vision.capture import (
    FFMPEG_OPTIONS_ENV, CaptureError, FpsLimiter, Frame, FrameGrabber, ReopenBackoff, open_capture, redact_url,
)
from simulator.brokers import free_port
from simulator.camera import MjpegCamera



def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(0.02)


class StateLog:
    """Records on_state calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def __call__(self, state: str, error: str | None) -> None:
        with self._lock:
            self.calls.append((state, error))

    @property
    def states(self) -> list[str]:
        with self._lock:
            return [state for state, _ in self.calls]


# ------------------------------------------------------------------------------------- files


def test_reads_every_frame_of_the_file_then_ends(entrance_video):
    probe = cv2.VideoCapture(str(entrance_video))
    frame_count = probe.get(cv2.CAP_PROP_FRAME_COUNT)
    probe.release()
    log = StateLog()
    grabber = FrameGrabber(str(entrance_video), realtime=False, loop=False, on_state=log).start()
    wait_for(lambda: not grabber.alive, 120, "end of file")
    assert grabber.state == "ended"
    assert abs(grabber.frames_read - frame_count) <= 1
    assert log.states == ["connecting", "streaming", "ended"]
    assert (grabber.reopens, grabber.read_errors) == (0, 0)
    last = grabber.latest()
    assert last.index == grabber.frames_read
    assert last.image.shape == (432, 768, 3)
    assert last.pts == pytest.approx(139.3, abs=0.2)  # the file's own clock, 10 fps
    assert grabber.wait_next(last.index, timeout=5) is None  # ended: answers at once, nothing newer
    grabber.stop()


def test_file_url_is_accepted(entrance_video):
    capture = open_capture(entrance_video.resolve().as_uri(), open_timeout=5, read_timeout=5)
    try:
        ok, image = capture.read()
        assert ok and image.shape == (432, 768, 3)
    finally:
        capture.release()


def test_loop_keeps_going_past_the_end(entrance_video):
    log = StateLog()
    with FrameGrabber(str(entrance_video), realtime=False, loop=True, on_state=log) as grabber:
        wait_for(lambda: grabber.frames_read > 1394 + 100, 120, "reading past the end")
        assert grabber.state == "streaming"
        assert grabber.reopens == 0  # a rewind is not a failure
    assert log.states == ["connecting", "streaming", "stopped"]


def test_latest_is_the_newest_frame_and_only_one_is_held(entrance_video):
    with FrameGrabber(str(entrance_video), realtime=False, loop=True) as grabber:
        refs: list[weakref.ref] = []
        indexes: list[int] = []
        last = 0
        for _ in range(60):
            frame = grabber.wait_next(last, timeout=10)
            assert frame is not None and frame.index > last
            assert frame.index <= grabber.frames_read
            assert not frame.image.flags.writeable  # shared by every consumer
            indexes.append(frame.index)
            refs.append(weakref.ref(frame))
            last = frame.index
            del frame
            time.sleep(0.005)  # a consumer slower than the reader
        newest = grabber.latest()
        assert newest.index >= last
        del newest
        gc.collect()
        alive = [ref() for ref in refs if ref() is not None]
        assert len(alive) <= 1  # at most the grabber's current frame; no queue of old ones
        assert any(b - a > 1 for a, b in itertools.pairwise(indexes))  # the slow consumer skipped frames


def test_realtime_file_plays_at_its_own_speed(entrance_video):
    with FrameGrabber(str(entrance_video), realtime=True, loop=False) as grabber:
        first = grabber.wait_next(0, timeout=30)
        assert first is not None
        started = time.monotonic()
        time.sleep(1.0)
        frame = grabber.latest()
        # Bounds in one direction only: a slow machine reads fewer, never more than 10 fps allows
        # (unpaced, this file decodes at about 1000 fps here).
        assert frame.pts - first.pts <= (frame.ts - first.ts) + 0.25
        assert grabber.frames_read <= 10 * (time.monotonic() - started) + 5


def test_a_missing_file_raises_a_clear_capture_error(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(CaptureError, match=f"video file {missing} not found"):
        open_capture(str(missing), open_timeout=2, read_timeout=2)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(CaptureError, match="not a video"):
        open_capture(str(not_video), open_timeout=2, read_timeout=2)


def test_grabber_reports_a_missing_source_and_keeps_retrying(tmp_path):
    log = StateLog()
    grabber = FrameGrabber(str(tmp_path / "nope.mp4"), on_state=log).start()
    try:
        wait_for(lambda: grabber.reopens >= 2, 30, "retries")
        assert grabber.state == "stalled"
        assert "not found" in grabber.last_error
        assert ("stalled", grabber.last_error) in log.calls
        assert grabber.latest() is None
    finally:
        grabber.stop()


def test_network_errors_name_the_reason_without_the_password():
    port = free_port()
    with pytest.raises(CaptureError, match="connection refused"):
        open_capture(f"http://127.0.0.1:{port}/stream.mjpg", open_timeout=2, read_timeout=2)
    with pytest.raises(CaptureError, match="unknown host") as caught:
        open_capture("rtsp://admin:hunter2@camera.invalid/stream1", open_timeout=2, read_timeout=2)
    assert "hunter2" not in str(caught.value)
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"


# -------------------------------------------------------------------------------------- RTSP


class FakeRtspServer:
    """Answers OPTIONS and DESCRIBE like a camera and records each SETUP's Transport header. SETUP
    is refused with 461 Unsupported Transport (`refuse_setup`), which makes a client that may fall
    back try its next transport, or never answered, so the open can only end by its open timeout."""

    def __init__(self, refuse_setup: bool) -> None:
        self.refuse_setup = refuse_setup
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.transports: list[str] = []
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:
                request, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = request.decode().split("\r\n")
                method = lines[0].split()[0]
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                cseq = headers.get("CSeq", "0")
                if method == "OPTIONS":
                    conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: DESCRIBE, SETUP, PLAY\r\n\r\n".encode())
                elif method == "DESCRIBE":
                    sdp = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
                           "m=video 0 RTP/AVP 26\r\na=control:track1\r\n")
                    conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
                                 f"Content-Length: {len(sdp)}\r\n\r\n{sdp}".encode())
                elif method == "SETUP":
                    self.transports.append(headers.get("Transport", ""))
                    if self.refuse_setup:
                        conn.sendall(f"RTSP/1.0 461 Unsupported Transport\r\nCSeq: {cseq}\r\n\r\n".encode())

    def close(self) -> None:
        self.sock.close()
        for conn in self._connections:
            conn.close()


def test_rtsp_is_asked_for_over_tcp_only():
    assert "rtsp_transport;tcp" in os.environ[FFMPEG_OPTIONS_ENV]
    server = FakeRtspServer(refuse_setup=True)
    try:
        with pytest.raises(CaptureError):
            open_capture(f"rtsp://127.0.0.1:{server.port}/stream1", open_timeout=5.0, read_timeout=5.0)
        # OpenCV's default (rtsp_flags prefer_tcp) would go on to UDP and multicast after the refusal.
        assert server.transports and all(t.startswith("RTP/AVP/TCP") for t in server.transports)
    finally:
        server.close()


def test_rtsp_open_timeout_is_honoured():
    server = FakeRtspServer(refuse_setup=False)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            open_capture(f"rtsp://127.0.0.1:{server.port}/stream1", open_timeout=1.0, read_timeout=1.0)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    try:
        opener = threading.Thread(target=attempt, daemon=True)
        opener.start()
        opener.join(20)  # FFmpeg's own default would hold it for 30 s
        assert not opener.is_alive(), "the 1 s open timeout was not applied"
        assert len(outcome) == 1 and isinstance(outcome[0], CaptureError)
        assert "gave no video within 1 s" in str(outcome[0])
        assert len(server.transports) == 1  # it got as far as SETUP and waited there
    finally:
        server.close()


# ----------------------------------------------------------------------- the virtual camera


@pytest.fixture
def camera(entrance_video):
    camera = MjpegCamera(entrance_video, fps=20).start()
    yield camera
    camera.stop()


def test_frames_arrive_over_http_and_state_goes_streaming(camera):
    log = StateLog()
    with FrameGrabber(camera.url, open_timeout=5, read_timeout=5, stall_after=5, on_state=log) as grabber:
        wait_for(lambda: grabber.state == "streaming", 30, "streaming")
        first = grabber.wait_next(0, timeout=10)
        second = grabber.wait_next(first.index, timeout=10)
        assert second.index > first.index
        assert second.image.shape == (432, 768, 3)
        assert second.pts is None  # FFmpeg's MJPEG timestamps are invented; not passed on
        assert grabber.source_fps is None
        assert grabber.frame_size == (768, 432)
    assert log.states == ["connecting", "streaming", "stopped"]
    assert grabber.state == "stopped"


def test_a_frozen_camera_is_reopened(camera):
    log = StateLog()
    grabber = FrameGrabber(camera.url, open_timeout=1.0, read_timeout=5.0, stall_after=1.0, on_state=log).start()
    try:
        wait_for(lambda: grabber.state == "streaming", 30, "streaming")
        camera.stall(3.0)
        wait_for(lambda: grabber.state == "stalled", 30, "stall noticed")
        assert "no frame" in grabber.last_error
        wait_for(lambda: grabber.state == "streaming", 60, "streaming again")
        assert grabber.reopens >= 1
        assert grabber.read_errors >= 1
        states = log.states
        assert states[:2] == ["connecting", "streaming"]
        assert "stalled" in states[2:] and states[-1] == "streaming"
        assert camera.connections >= 2
        index = grabber.latest().index
        assert grabber.wait_next(index, timeout=10).index > index  # and frames flow again
    finally:
        grabber.stop()


def test_a_network_drop_is_reopened(camera):
    grabber = FrameGrabber(camera.url, open_timeout=5, read_timeout=5, stall_after=5).start()
    try:
        wait_for(lambda: grabber.state == "streaming", 30, "streaming")
        camera.drop_clients()
        wait_for(lambda: grabber.reopens >= 1 and grabber.state == "streaming", 60, "reconnected")
        assert camera.connections >= 2
    finally:
        grabber.stop()


def test_a_camera_switched_off_is_retried_with_backoff_until_it_is_back(camera):
    log = StateLog()
    grabber = FrameGrabber(camera.url, open_timeout=2, read_timeout=2, stall_after=2, on_state=log).start()
    try:
        wait_for(lambda: grabber.state == "streaming", 30, "streaming")
        camera.stop()
        wait_for(lambda: grabber.reopens >= 3, 60, "several reopen attempts")
        assert grabber.state == "stalled"
        assert "connection refused" in grabber.last_error
        assert grabber.retry_delay > ReopenBackoff().initial  # the delay grew
        camera.start()  # same port
        wait_for(lambda: grabber.state == "streaming", 90, "streaming after the camera came back")
        assert grabber.backoff.failures == 0  # a good frame resets the backoff
        assert log.states[-1] == "streaming"
    finally:
        grabber.stop()


def test_stop_returns_while_a_read_is_still_blocked(camera):
    log = StateLog()
    grabber = FrameGrabber(camera.url, open_timeout=5, read_timeout=30, stall_after=30, on_state=log).start()
    wait_for(lambda: grabber.state == "streaming", 30, "streaming")
    camera.stall(60)
    last = grabber.latest().index
    assert grabber.wait_next(last + 1, timeout=1.0) is None  # the reader now sits in a blocked read
    grabber.stop(join_timeout=0.5)
    assert grabber.state == "stopped" and not grabber.alive
    assert grabber._thread.is_alive()  # stop() did not wait for the 30 s read timeout
    newest = grabber.latest().index
    assert grabber.wait_next(newest, timeout=10) is None  # stopped: answers at once, nothing newer
    camera.stop()  # the connection closes, so the blocked read returns and the thread ends
    wait_for(lambda: not grabber._thread.is_alive(), 60, "reader thread ended")
    assert log.states[-1] == "stopped"  # nothing was reported after stop()


# ---------------------------------------------------------------------------------- backoff


def test_backoff_doubles_to_its_maximum_and_resets():
    backoff = ReopenBackoff(initial=0.5, maximum=30.0, jitter=0.0)
    assert [backoff.next() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next() == 0.5
    jittered = ReopenBackoff()  # times 0.8-1.0, so cameras sharing a fault do not retry in step
    assert 0.4 <= jittered.next() <= 0.5
    assert 0.8 <= jittered.next() <= 1.0


# ----------------------------------------------------------------------------- fps limiter


def test_fps_limiter_holds_the_target_rate_on_a_fake_clock():
    limiter = FpsLimiter(4)
    decisions = [limiter.due(i / 10) for i in range(100)]  # 10 s of frames at 10 fps
    assert limiter.processed == sum(decisions) == 40
    assert limiter.skipped == 60
    assert limiter.rate(now=9.9) == pytest.approx(4.0, rel=0.05)
    assert limiter.rate(now=30.0) == 0.0  # frames stopped: the rate falls to zero


def test_fps_limiter_processes_everything_below_the_target():
    limiter = FpsLimiter(30)
    assert all(limiter.due(i / 10) for i in range(50))
    assert (limiter.processed, limiter.skipped) == (50, 0)
    unlimited = FpsLimiter(None)
    assert all(unlimited.due(0.0) for _ in range(10))


def test_fps_limiter_does_not_burst_after_a_gap():
    limiter = FpsLimiter(5)
    for i in range(10):
        limiter.due(i / 10)
    before = limiter.processed
    later = [limiter.due(60 + i / 100) for i in range(20)]  # a camera back after a minute, at 100 fps
    assert sum(later) == 1  # 0.2 s at 5 fps: one frame, not a minute of catching up
    assert limiter.processed == before + 1


def test_fps_limiter_starts_afresh_when_its_clock_goes_back():
    limiter = FpsLimiter(5)
    assert [limiter.due(t) for t in (100.0, 100.1, 100.2)] == [True, False, True]
    assert limiter.due(0.0)  # a replay looped and its video clock restarted
    assert [limiter.due(t) for t in (0.1, 0.2)] == [False, True]


def test_frame_is_a_plain_record(entrance_video):
    with FrameGrabber(str(entrance_video), realtime=False) as grabber:
        frame = grabber.wait_next(0, timeout=30)
    assert isinstance(frame, Frame)
    assert frame.index >= 1 and frame.ts > 1e9 and frame.pts is not None

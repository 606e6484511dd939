"""The virtual IP camera: a real MJPEG stream over HTTP, read here the way any client would."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from simulator.camera import MjpegCamera



@pytest.fixture
def short_video(tmp_path) -> Path:
    """12 frames of 160x120 at 20 fps, each showing its number (brightness 20 * i in a corner)."""
    path = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (160, 120))
    assert writer.isOpened()
    for i in range(12):
        image = np.full((120, 160, 3), 40, np.uint8)
        image[:40, :40] = 20 * i
        writer.write(image)
    writer.release()
    return path


class PartReader:
    """Parses a multipart/x-mixed-replace body strictly: boundary line, headers, exactly
    Content-Length bytes, CRLF. One per response (httpx streams a body only once)."""

    def __init__(self, response: httpx.Response):
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        self._chunks = response.iter_bytes()
        self._buffer = b""

    def _more(self) -> None:
        self._buffer += next(self._chunks)  # StopIteration: the server closed the stream

    def read(self, count: int) -> list[tuple[dict[str, str], bytes]]:
        parts = []
        while len(parts) < count:
            while b"\r\n\r\n" not in self._buffer:
                self._more()
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("ascii").split("\r\n")
            assert lines[0] == "--frame", lines
            headers = {name.strip().lower(): value.strip()
                       for name, value in (line.split(":", 1) for line in lines[1:])}
            length = int(headers["content-length"])
            while len(self._buffer) < length + 2:
                self._more()
            body, crlf, self._buffer = (self._buffer[:length], self._buffer[length:length + 2],
                                        self._buffer[length + 2:])
            assert crlf == b"\r\n"
            parts.append((headers, body))
        return parts


def read_parts(response: httpx.Response, count: int) -> list[tuple[dict[str, str], bytes]]:
    return PartReader(response).read(count)


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def test_stream_is_multipart_jpeg_of_the_videos_size(entrance_video):
    with MjpegCamera(entrance_video) as camera:
        assert camera.fps == pytest.approx(10.0)
        with httpx.stream("GET", camera.url, timeout=10) as response:
            assert response.status_code == 200
            parts = read_parts(response, 5)
    for headers, body in parts:
        assert headers["content-type"] == "image/jpeg"
        assert decode(body).shape == (432, 768, 3)


def test_two_clients_at_once_share_each_encoded_frame(entrance_video):
    results: dict[str, list[bytes]] = {}
    with MjpegCamera(entrance_video, fps=20) as camera:
        started = threading.Barrier(3)

        def client(name: str) -> None:
            with httpx.stream("GET", camera.url, timeout=10) as response:
                started.wait(10)
                results[name] = [body for _, body in read_parts(response, 10)]

        threads = [threading.Thread(target=client, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        started.wait(10)
        assert camera.clients == 2
        for thread in threads:
            thread.join(30)
    assert len(results["a"]) == len(results["b"]) == 10
    for body in results["a"] + results["b"]:
        assert decode(body).shape == (432, 768, 3)
    # Encoded once per tick: both clients received byte-identical JPEGs of the same frames.
    assert len(set(results["a"]) & set(results["b"])) >= 5


def test_snapshot_decodes(entrance_video):
    with MjpegCamera(entrance_video) as camera:
        response = httpx.get(camera.snapshot_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert int(response.headers["content-length"]) == len(response.content)
    assert decode(response.content).shape == (432, 768, 3)


def test_unknown_path_is_404(entrance_video):
    with MjpegCamera(entrance_video) as camera:
        assert httpx.get(camera.url.replace("/stream.mjpg", "/other"), timeout=10).status_code == 404


def test_frames_are_paced_at_fps_not_as_fast_as_possible(short_video):
    with MjpegCamera(short_video, fps=20) as camera:
        with httpx.stream("GET", camera.url, timeout=10) as response:
            reader = PartReader(response)
            reader.read(1)
            started = time.monotonic()
            reader.read(10)
            elapsed = time.monotonic() - started
    # A lower bound only (a slow machine is slower still): 10 frames at 20 fps take 0.5 s.
    assert elapsed >= 0.4


def test_fps_defaults_to_the_files_own_rate(short_video):
    assert MjpegCamera(short_video).fps == pytest.approx(20.0)


def test_without_loop_the_stream_ends_after_the_last_frame(short_video):
    with MjpegCamera(short_video, fps=50, loop=False) as camera:
        with httpx.stream("GET", camera.url, timeout=10) as response:
            body = b"".join(response.iter_bytes())  # returns only because the camera closes the stream
        assert 1 <= body.count(b"--frame\r\n") <= 12
        last = decode(httpx.get(camera.snapshot_url, timeout=10).content)
    assert last[:40, :40].mean() == pytest.approx(220, abs=8)  # the 12th frame (20 * 11)


def test_with_loop_the_stream_goes_past_the_end(short_video):
    with MjpegCamera(short_video, fps=50, loop=True) as camera:
        with httpx.stream("GET", camera.url, timeout=10) as response:
            parts = read_parts(response, 30)
    corners = [decode(body)[:40, :40].mean() for _, body in parts]
    assert any(later < earlier - 100 for earlier, later in itertools.pairwise(corners))  # wrapped to frame 0


def test_stall_keeps_the_connection_open_but_sends_nothing(entrance_video):
    with MjpegCamera(entrance_video, fps=20) as camera:
        with httpx.stream("GET", camera.url, timeout=httpx.Timeout(10, read=0.5)) as response:
            reader = PartReader(response)
            reader.read(2)
            camera.stall(3.0)
            time.sleep(0.1)  # a part already on its way may still arrive
            with pytest.raises(httpx.ReadTimeout):
                reader.read(5)
            assert camera.clients == 1  # still connected: a frozen camera, not a dead one
        with httpx.stream("GET", camera.url, timeout=10) as response:
            assert len(read_parts(response, 2)) == 2  # after the stall it streams again


def test_drop_clients_closes_every_connection(entrance_video):
    with MjpegCamera(entrance_video, fps=20) as camera:
        with httpx.stream("GET", camera.url, timeout=10) as response:
            reader = PartReader(response)
            reader.read(1)
            assert camera.drop_clients() == 1
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, StopIteration)):
                reader.read(1000)
        deadline = time.monotonic() + 10
        while camera.clients and time.monotonic() < deadline:
            time.sleep(0.05)
        assert camera.clients == 0


def test_stop_and_start_keep_the_port(entrance_video):
    camera = MjpegCamera(entrance_video).start()
    try:
        url = camera.url
        camera.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(camera.snapshot_url, timeout=5)
        camera.start()
        assert camera.url == url
        assert decode(httpx.get(camera.snapshot_url, timeout=10).content).shape == (432, 768, 3)
    finally:
        camera.stop()

"""A tiny HTTP file server on loopback: the CDN of the platform (ad media, scoring models) in tests,
benchmarks and the demo. `FileServer({"/ads/a.png": data})` serves those bytes (the type guessed
from the name), 404 for the rest; `put(name, data)` adds one and returns its URL; `hits` counts the
requests per path."""

from __future__ import annotations

import http.server
import mimetypes
import threading
from typing import Self


class FileServer:
    def __init__(self, files: dict[str, bytes] | None = None, host: str = "127.0.0.1"):
        self.files: dict[str, bytes] = dict(files or {})  # may be changed while serving
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                data = owner.files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Type", mimetypes.guess_type(self.path)[0] or "application/octet-stream")
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def put(self, name: str, data: bytes) -> str:
        """Serve `data` at `/name`; its URL."""
        self.files[f"/{name}"] = data
        return f"{self.url}/{name}"

    def start(self) -> Self:
        threading.Thread(target=self._server.serve_forever, name="file-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

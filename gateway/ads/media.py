"""The screens' media cache: creatives' files fetched from their `media_url`, checked against their
`sha256`, kept on disk and served to the players by the gateway (`GET /v1/screens/{id}/media/{sha256}`).

- **Content-addressed.** A file is stored as `<directory>/<sha256[:2]>/<sha256>`. A download goes to
  a temporary `.part` file beside it (streamed with httpx, hashed as it arrives, at most
  `max_file_bytes`) and is renamed into place only when the sha256 of the bytes matches. A mismatch
  (or an HTTP error, a timeout, a file too large) is logged, the temporary file deleted, and the
  fetch retried later with exponential backoff (`retry_min` doubling up to `retry_max`): a file that
  does not match its sha256 is never served.
- **What is wanted.** `ensure(creatives)` (the service calls it after each plan) makes the media of
  those creatives the wanted set: the missing ones are fetched in the background, at most
  `concurrency` at a time, and the wanted ones are *pinned*: eviction never removes them.
- **Eviction.** While the files' total exceeds `max_bytes`, the least recently used file that is not
  pinned is deleted (use: the last `path()` that found it, kept in memory and in the file's mtime,
  so it survives a restart). When only pinned files are left the total may stay over the limit (a
  warning is logged): a current playlist needs them.
- **Restarts.** `start()` scans the directory (in a worker thread): temporary files are deleted, and
  so is every file whose content does not match the sha256 its name says (a torn write, a disk
  error).
- `on_cached(sha256)` is called (on the event loop) when a file has been stored, so the service can
  add the `local_url` to the playlists that play it. `status()` is for /v1/health.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..models import sha256_of

log = logging.getLogger("gateway.ads.media")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 256 * 1024
TOUCH_INTERVAL = 60.0  # seconds between two mtime updates of a file in use (spares the disk)
MAX_ERRORS_SHOWN = 10


class MediaError(Exception):
    """A download that cannot be kept (HTTP error, too large, sha256 mismatch)."""


@dataclass(eq=False)
class _Entry:
    size: int
    used: float  # the last use, epoch seconds (also the file's mtime, give or take TOUCH_INTERVAL)
    touched: float


@dataclass(eq=False)
class _Failure:
    url: str
    error: str
    attempts: int


class MediaCache:
    def __init__(self, directory: Path | str, max_bytes: int, *, fetch_timeout: float = 60.0,
                 max_file_bytes: int = 512 * 1024**2, concurrency: int = 2, retry_min: float = 30.0,
                 retry_max: float = 3600.0, on_cached: Callable[[str], Any] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.max_file_bytes = int(max_file_bytes)
        self.fetch_timeout = fetch_timeout
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.on_cached = on_cached
        self._transport = transport
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._entries: dict[str, _Entry] = {}
        self._pinned: set[str] = set()
        self._wanted: dict[str, str] = {}  # sha256 -> url
        self._tasks: dict[str, asyncio.Task] = {}  # sha256 -> its fetch (waiting for a slot, or running)
        self._failures: dict[str, _Failure] = {}
        self._retry_handles: dict[str, asyncio.TimerHandle] = {}
        self._client: httpx.AsyncClient | None = None
        self.counts = {"fetched": 0, "fetch_errors": 0, "mismatches": 0, "evicted": 0, "dropped_at_start": 0}

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Scan the directory (off the loop): what is there and intact is cached again."""
        self._entries, dropped = await asyncio.to_thread(self._scan)
        self.counts["dropped_at_start"] += dropped
        self._evict()

    def _scan(self) -> tuple[dict[str, _Entry], int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        entries: dict[str, _Entry] = {}
        dropped = 0
        for sub in self.directory.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for path in sub.iterdir():
                if not path.is_file():
                    continue
                name = path.name
                if not SHA256.match(name) or sub.name != name[:2] or sha256_of(path) != name:
                    log.warning("media cache: %s is not intact (or a leftover download); deleted", path)
                    path.unlink(missing_ok=True)
                    dropped += int(not name.endswith(".part"))
                    continue
                st = path.stat()
                entries[name] = _Entry(st.st_size, st.st_mtime, st.st_mtime)
        if entries or dropped:
            log.info("media cache: %d files (%d bytes) found in %s, %d dropped", len(entries),
                     sum(e.size for e in entries.values()), self.directory, dropped)
        return entries, dropped

    async def close(self) -> None:
        for handle in self._retry_handles.values():
            handle.cancel()
        self._retry_handles.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------------------- lookups

    def file_path(self, sha256: str) -> Path:
        return self.directory / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Cached (no side effect; safe from a worker thread)."""
        return sha256 in self._entries

    def path(self, sha256: str) -> Path | None:
        """The cached file of this sha256 (marked as used now), or None."""
        entry = self._entries.get(sha256)
        if entry is None:
            return None
        now = time.time()
        entry.used = now
        if now - entry.touched >= TOUCH_INTERVAL:
            entry.touched = now
            try:
                os.utime(self.file_path(sha256), (now, now))
            except FileNotFoundError:  # deleted behind our back
                self._entries.pop(sha256, None)
                return None
            except OSError:
                pass
        return self.file_path(sha256)

    # ----------------------------------------------------------------------------- fetching

    def ensure(self, creatives: Iterable[Any]) -> None:
        """The media of these creatives (those with a sha256 and a media_url) are wanted: pinned, and
        fetched in the background when missing. Replaces the previous wanted set. On the loop."""
        wanted: dict[str, str] = {}
        for creative in creatives:
            sha, url = getattr(creative, "sha256", None), getattr(creative, "media_url", None)
            if sha and url:
                wanted.setdefault(sha, url)
        self._wanted = wanted
        self._pinned = set(wanted)
        for sha in list(self._failures):
            if sha not in wanted or self._failures[sha].url != wanted[sha]:  # a new URL: try it at once
                self._forget_failure(sha)
        for sha in wanted:
            self._schedule(sha)
        self._evict()

    def _forget_failure(self, sha: str) -> None:
        del self._failures[sha]
        handle = self._retry_handles.pop(sha, None)
        if handle is not None:
            handle.cancel()

    def _schedule(self, sha: str) -> None:
        if sha in self._entries or sha in self._tasks or sha in self._failures or sha not in self._wanted:
            return
        self._tasks[sha] = asyncio.get_running_loop().create_task(self._fetch(sha, self._wanted[sha]),
                                                                  name=f"media-{sha[:12]}")

    def _retry(self, sha: str) -> None:
        self._retry_handles.pop(sha, None)
        failure = self._failures.get(sha)
        if failure is None or sha not in self._wanted or sha in self._tasks:
            return
        self._tasks[sha] = asyncio.get_running_loop().create_task(self._fetch(sha, self._wanted[sha], failure),
                                                                  name=f"media-{sha[:12]}")

    async def _fetch(self, sha: str, url: str, failure: _Failure | None = None) -> None:
        try:
            async with self._semaphore:
                size = await self._download(sha, url)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempts = (failure.attempts if failure is not None else 0) + 1
            delay = min(self.retry_max, self.retry_min * 2 ** (attempts - 1))
            loop = asyncio.get_running_loop()
            self._failures[sha] = _Failure(url, _describe(exc), attempts)
            self.counts["fetch_errors"] += 1
            if isinstance(exc, MediaError) and "sha256" in str(exc):
                self.counts["mismatches"] += 1
            log.warning("media %s from %s: %s (attempt %d; retry in %gs)", sha[:12], url, _describe(exc),
                        attempts, delay)
            self._retry_handles[sha] = loop.call_later(delay, self._retry, sha)
            return
        finally:
            self._tasks.pop(sha, None)
        self._failures.pop(sha, None)
        now = time.time()
        self._entries[sha] = _Entry(size, now, now)
        self.counts["fetched"] += 1
        log.info("media %s cached (%d bytes) from %s", sha[:12], size, url)
        self._evict()
        if self.on_cached is not None and sha in self._entries:
            try:
                result = self.on_cached(sha)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("media %s: on_cached failed", sha[:12])

    async def _download(self, sha: str, url: str) -> int:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.fetch_timeout, follow_redirects=True,
                                             transport=self._transport)
        final = self.file_path(sha)
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        part = final.parent / f"{sha}.{secrets.token_hex(4)}.part"
        digest = hashlib.sha256()
        size = 0
        handle = await asyncio.to_thread(open, part, "wb")
        try:
            try:
                async with self._client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise MediaError(f"HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > self.max_file_bytes:
                        raise MediaError(f"{declared} bytes is more than the limit of {self.max_file_bytes}")
                    async for chunk in response.aiter_bytes(CHUNK):
                        size += len(chunk)
                        if size > self.max_file_bytes:
                            raise MediaError(f"more than the limit of {self.max_file_bytes} bytes")
                        digest.update(chunk)
                        await asyncio.to_thread(handle.write, chunk)
                got = digest.hexdigest()
                if got != sha:
                    raise MediaError(f"sha256 mismatch: the {size} bytes downloaded hash to {got}")
                await asyncio.to_thread(_flush_and_sync, handle)
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, part, final)
        except BaseException:
            await asyncio.to_thread(part.unlink, True)
            raise
        return size

    # ----------------------------------------------------------------------------- eviction

    def _evict(self) -> None:
        total = sum(e.size for e in self._entries.values())
        if total <= self.max_bytes:
            return
        for sha, entry in sorted(self._entries.items(), key=lambda kv: kv[1].used):
            if total <= self.max_bytes:
                break
            if sha in self._pinned:
                continue
            try:
                self.file_path(sha).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("media %s: cannot evict: %s", sha[:12], exc)
                continue
            del self._entries[sha]
            total -= entry.size
            self.counts["evicted"] += 1
            log.info("media %s evicted (%d bytes; least recently used)", sha[:12], entry.size)
        if total > self.max_bytes:
            log.warning("media cache: %d bytes pinned by current playlists, more than max_bytes %d",
                        total, self.max_bytes)

    # ------------------------------------------------------------------------------- health

    def status(self) -> dict[str, Any]:
        return {
            "files": len(self._entries),
            "bytes": sum(e.size for e in self._entries.values()),
            "max_bytes": self.max_bytes,
            "pinned": len(self._pinned),
            "pending": len(self._tasks) + sum(1 for s in self._failures if s not in self._tasks),
            "failed": len(self._failures),
            "errors": [{"sha256": sha, "url": f.url, "error": f.error, "attempts": f.attempts}
                       for sha, f in list(self._failures.items())[:MAX_ERRORS_SHOWN]],
            **self.counts,
        }


def _flush_and_sync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["SHA256", "MediaCache", "MediaError"]

"""The `ads.model` downlink: a new ad scoring model from the platform, swapped in without a pause.

`{"url": "https://.../ad_scorer-v3.onnx", "sha256": "<64 hex>"}`: the gateway downloads the file
(at most MAX_MODEL_BYTES), checks its sha256 and that it loads as an ad scorer (gateway.ads.scorer),
then makes it current: the screens keep playing with the old model until then, and a bad file is
refused with the old model kept. The accepted file is kept beside the gateway's store
(`ad_scorer.onnx`), so the model survives a restart; without one the model shipped in the
repository is used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

import httpx

from ..commands import CommandError
from ..models import ModelError
from .scorer import SHIPPED_MODEL, AdScorer, ScorerHolder

log = logging.getLogger("gateway.ads.model")

MAX_MODEL_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT_S = 60.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^https?://\S+$", re.IGNORECASE)


def load_scorer(kept: Path) -> ScorerHolder | None:
    """The model last accepted by downlink (`kept`), else the shipped one; None if neither loads."""
    for path in (kept, SHIPPED_MODEL):
        if not path.exists():
            continue
        try:
            return ScorerHolder(AdScorer.load(path))
        except Exception as exc:  # a damaged file: the next one, else share of voice
            log.warning("ad scorer %s not loaded (%s)", path, exc)
    return None


async def _download(url: str) -> bytes:
    chunks, size = [], 0
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True) as client:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise CommandError(f"ads.model: {url} answered HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_MODEL_BYTES:
                    raise CommandError(f"ads.model: the model is larger than {MAX_MODEL_BYTES} bytes")
                chunks.append(chunk)
    return b"".join(chunks)


def _keep(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    with open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


async def model_command(holder: ScorerHolder, kept: Path, args: dict) -> dict:
    """Handle `ads.model`; the ack's result `{sha256, bytes}`, or CommandError with the old model kept."""
    url, sha256 = args.get("url"), args.get("sha256")
    if not isinstance(url, str) or not _URL.match(url):
        raise CommandError("ads.model needs url: an http(s) URL of the model file")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise CommandError("ads.model needs sha256: 64 lowercase hex digits")
    try:
        data = await _download(url)
    except httpx.HTTPError as exc:
        raise CommandError(f"ads.model: cannot fetch {url}: {type(exc).__name__}: {exc}") from None
    try:
        await asyncio.to_thread(holder.swap, data, sha256)
    except ModelError as exc:
        raise CommandError(f"ads.model refused, the current model stays: {exc}") from None
    await asyncio.to_thread(_keep, kept, data)
    log.info("ad scorer replaced by %s (%d bytes, sha256 %s)", url, len(data), sha256[:12])
    return {"sha256": sha256, "bytes": len(data)}

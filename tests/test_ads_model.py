"""`ads.model`: a new ad scoring model by downlink, fetched over real HTTP, checked, swapped in, kept
for the next start; a bad one refused with the current model kept."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from gateway.ads.model_downlink import load_scorer, model_command
from gateway.ads.scorer import SHIPPED_MODEL, ScorerHolder
from gateway.commands import CommandError
from simulator.files import FileServer


@pytest.fixture
def files():
    """A local HTTP server of {path: bytes}."""
    with FileServer() as server:
        yield server.files, server.url


def test_a_model_sent_by_downlink_is_swapped_in_and_kept(tmp_path, files):
    served, base = files
    good = SHIPPED_MODEL.read_bytes()
    served["/good.onnx"], served["/garbage.onnx"] = good, b"not a model" * 100
    kept = tmp_path / "ad_scorer.onnx"
    holder = ScorerHolder()  # no model yet: rotation by share of voice

    async def run(args):
        return await model_command(holder, kept, args)

    sha = hashlib.sha256(good).hexdigest()
    assert asyncio.run(run({"url": f"{base}/good.onnx", "sha256": sha})) == {"sha256": sha, "bytes": len(good)}
    current = holder.scorer
    assert current is not None and kept.read_bytes() == good
    bad = [({"url": f"{base}/good.onnx", "sha256": "0" * 64}, "sha256"),  # not the file's sha256
           ({"url": f"{base}/garbage.onnx", "sha256": hashlib.sha256(served["/garbage.onnx"]).hexdigest()},
            "refused"),
           ({"url": f"{base}/missing.onnx", "sha256": sha}, "HTTP 404"),
           ({"url": "ftp://x/y", "sha256": sha}, r"an http\(s\) URL"),
           ({"url": f"{base}/good.onnx"}, "sha256")]
    for args, message in bad:
        with pytest.raises(CommandError, match=message):
            asyncio.run(run(args))
        assert holder.scorer is current and kept.read_bytes() == good  # the current model stays
    # The next start takes the kept model; a damaged kept file falls back to the shipped one.
    assert load_scorer(kept).scorer is not None
    kept.write_bytes(b"damaged")
    assert load_scorer(kept).scorer is not None

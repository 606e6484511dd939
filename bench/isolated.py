"""Run a benchmark phase in a fresh process, so that its peak RSS and warm-up are its own."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(results, phase, args) -> None:
    results.put(phase(*args))


def run_isolated(ctx, phase, *args, timeout: float = 900) -> dict:
    """`phase(*args)` in a new process of the multiprocessing context `ctx`; returns its result."""
    results = ctx.Queue()
    process = ctx.Process(target=_child, args=(results, phase, args))
    process.start()
    result = results.get(timeout=timeout)
    process.join(30)
    return result

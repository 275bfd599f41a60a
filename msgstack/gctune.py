"""Garbage-collector tuning of a long-running service, by configuration, and its cost on /metrics.

A request allocates many short-lived container objects (dicts, tuples, coroutine frames), so at
hundreds of requests per second CPython's default generation-0 threshold (700 allocations) runs a
young collection every few requests, and every full collection walks the whole heap, most of which
(modules, the app, pools) lives as long as the process. Two settings, both measured with
``benchmarks/pipeline_bench.py`` (``msgstack_gc_seconds_total`` per accepted message, see
docs/performance.md):

- ``MSGSTACK_GC_FREEZE`` (default 1): once the service has started, `gc.freeze()` moves every
  object alive then into the permanent generation, which no collection walks again;
- ``MSGSTACK_GC_GEN0_THRESHOLD`` (default 7000): allocations between young collections (CPython's
  default is 700); the older generations keep CPython's thresholds.

``msgstack_gc_seconds_total{generation}`` counts the CPU time spent in collections (gc.callbacks,
the collecting thread's CPU clock, so preemption on a busy machine does not inflate it).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping

from msgstack import metrics

__all__ = ["after_start", "install"]

log = logging.getLogger("msgstack.gctune")

DEFAULT_GEN0 = 7000
_started: list[float] = []


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _started.append(time.thread_time())
    elif _started:
        metrics.GC_SECONDS.labels(str(info.get("generation", "?"))).inc(
            time.thread_time() - _started.pop()
        )


def install(env: Mapping[str, str]) -> None:
    """Set the generation-0 threshold and count collection time (at process start)."""
    raw = env.get("MSGSTACK_GC_GEN0_THRESHOLD", "").strip()
    gen0 = int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_GEN0
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def after_start(env: Mapping[str, str]) -> None:
    """Freeze what the started service holds for good (unless MSGSTACK_GC_FREEZE=0)."""
    if env.get("MSGSTACK_GC_FREEZE", "1").strip() != "0":
        gc.collect()
        gc.freeze()
        log.debug("gc: %d objects frozen", gc.get_freeze_count())

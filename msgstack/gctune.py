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

Memory a burst borrowed, returned: `map_large_allocations` (the gateway calls it at start). A
Python object over 512 bytes comes from the C library's malloc, and glibc serves requests under
its mmap threshold (128 KiB, raised as large blocks are freed) from a heap that it can give back
to the system only from its top. The gateway holds a 64 KiB message as a few 64-87 KB objects
(the row, its base64, the frame) while a slow device's send queue keeps it, so a device that
stops reading for a few seconds borrows tens of MB, and once a longer-lived object sits above
those blocks the heap keeps them for the rest of the process: the resident size ratchets up with
every such burst (seen in the large-payload experiment, T5: +14 MB kept after a 5 s stall of 5
devices, +26 % in all, limit 10 %). With the threshold fixed at MSGSTACK_MALLOC_MMAP_THRESHOLD
bytes (64 KiB by default; 0 leaves glibc's own) every such block is a mapping of its own, given
back when it is freed. Written here with ctypes: the standard library exposes no mallopt, and no
maintained package does only this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Mapping

from msgstack import metrics

__all__ = ["after_start", "install", "map_large_allocations"]

log = logging.getLogger("msgstack.gctune")

DEFAULT_GEN0 = 7000
DEFAULT_MMAP_THRESHOLD = 64 * 1024
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
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


def map_large_allocations(env: Mapping[str, str]) -> int | None:
    """Serve allocations of MSGSTACK_MALLOC_MMAP_THRESHOLD bytes or more (default 64 KiB) with
    mappings of their own, returned to the system when freed (glibc only; see the module
    docstring). Returns the threshold set, or None when it was left alone (0, or not glibc)."""
    raw = env.get("MSGSTACK_MALLOC_MMAP_THRESHOLD", "").strip()
    threshold = int(raw) if raw.isdigit() else DEFAULT_MMAP_THRESHOLD
    if threshold <= 0:
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("malloc: no mallopt in %s; large allocations left to the C library", name)
        return None
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        log.warning("malloc: mallopt refused an mmap threshold of %d bytes", threshold)
        return None
    return threshold

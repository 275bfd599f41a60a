"""gctune.map_large_allocations: memory a burst of large objects borrowed goes back to the system
once they are freed, even with longer-lived objects allocated after them (the gateway's slow-device
backlog, plan T5). Each case runs in a fresh interpreter: the threshold is process-wide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from msgstack import gctune

REPO = Path(__file__).resolve().parents[1]

# 400 frames of a 64 KiB message (its base64 is ~88 KB), each followed by a small object (>512 B,
# so malloc's, not pymalloc's) that outlives it; then the frames are freed. Prints the resident
# size kept, in MiB, after the burst (and what the tuning set).
PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
from msgstack import gctune

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

env = {env!r}
set_to = gctune.map_large_allocations(env) if env is not None else None
base = rss()
frames, keep = [], []
for _ in range(400):
    frames.append(os.urandom(88_000))
    keep.append(os.urandom(600))
peak = rss()
frames.clear()
print(set_to, (peak - base) / 2**20, (rss() - base) / 2**20)
"""


def _burst(env: dict | None) -> tuple[str, float, float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(repo=str(REPO), env=env)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    set_to, peak, kept = done.stdout.split()
    return set_to, float(peak), float(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_burst_of_large_frames_is_returned_only_with_the_tuning():
    set_to, peak, kept = _burst({})
    assert set_to == str(gctune.DEFAULT_MMAP_THRESHOLD)
    assert peak > 25 and kept < 3, (peak, kept)
    # without it (glibc's own threshold) the heap keeps the burst: the tuning is what returns it
    _, peak, kept = _burst(None)
    assert peak > 25 and kept > 25, (peak, kept)
    # 0 leaves glibc alone, and the burst is kept again
    set_to, _, kept = _burst({"MSGSTACK_MALLOC_MMAP_THRESHOLD": "0"})
    assert set_to == "None" and kept > 25

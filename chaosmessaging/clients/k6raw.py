"""k6 raw samples (`k6 run --out csv=<file>.csv.gz`), merged over the runners of a split load.

When one arrival rate is split across runners (execution segments, docs/scale-out.md), each
runner's summary judges only its own share: its p95 says nothing about the whole load's p95, and
the average of the runners' p95s is not a percentile of anything. The whole load's figures come
from every runner's raw samples pooled: that is what `combined` computes, with k6's own percentile
definition (linear interpolation between the closest ranks), so one runner's p95 from its raw
file equals its summary's `p(95)`.

`start_load` writes the raw file beside the summary (`raw_path(summary)`); a k6-operator run's
runner pods write theirs wherever `--out csv=` points (collect them, then pass the paths).
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from chaoslib.exceptions import ActivityFailed

__all__ = ["RAW_SUFFIX", "combined", "percentile", "raw_path", "read_metric"]

RAW_SUFFIX = ".samples.csv.gz"
_DURATION, _FAILED = "http_req_duration", "http_req_failed"


def raw_path(summary_path: str | Path) -> Path:
    """Where `start_load` asks k6 to write the raw samples of the run with this summary."""
    summary = Path(summary_path)
    return summary.with_name(summary.stem + RAW_SUFFIX)


def read_metric(path: str | Path, names: Iterable[str]) -> Iterator[tuple[str, float]]:
    """Stream (metric name, value) of the samples of `names` in one k6 CSV output file."""
    wanted = set(names)
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="") as handle:
            for row in csv.DictReader(handle):
                if row["metric_name"] in wanted:
                    yield row["metric_name"], float(row["metric_value"])
    except (OSError, EOFError, KeyError, ValueError, csv.Error) as error:
        raise ActivityFailed(
            f"k6 raw samples {path} are unreadable ({error}): was the runner started with "
            "`--out csv=<file>` and did it finish?"
        ) from None


def percentile(ordered: list[float], q: float) -> float | None:
    """k6's Trend percentile of sorted values: linear interpolation at rank q*(n-1)."""
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _figures(durations: list[float], failed: list[float]) -> dict:
    durations.sort()
    return {
        "http_reqs": len(durations),
        "p95_ms": percentile(durations, 0.95),
        "p99_ms": percentile(durations, 0.99),
        "max_ms": durations[-1] if durations else None,
        "http_req_failed_rate": (sum(failed) / len(failed)) if failed else 0.0,
    }


def combined(paths: Iterable[str | Path]) -> dict:
    """The whole load's figures from every runner's raw file (`http_reqs`, `p95_ms`, `p99_ms`,
    `max_ms`, `http_req_failed_rate`), plus `runners`: each file's own figures, and
    `mean_runner_p95_ms` (what averaging the runners' p95s would have claimed, for contrast)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ActivityFailed("no k6 raw sample file to combine: no load ran with raw output")
    every_duration: list[float] = []
    every_failed: list[float] = []
    runners = []
    for path in paths:
        durations, failed = [], []
        for name, value in read_metric(path, (_DURATION, _FAILED)):
            (durations if name == _DURATION else failed).append(value)
        every_duration += durations
        every_failed += failed
        runners.append({"path": str(path), **_figures(durations, failed)})
    p95s = [r["p95_ms"] for r in runners if r["p95_ms"] is not None]
    return {
        **_figures(every_duration, every_failed),
        "runners": runners,
        "mean_runner_p95_ms": sum(p95s) / len(p95s) if p95s else None,
    }

"""Regression detection over nights (plan test 15): noise-aware, by change-point detection.

The rule (the plan's): a metric regresses when it is worse by more than 10% for 3 consecutive
nights. Comparing each night with an average would fire on a single bad night or drift with
noise, so the shift itself is located by change-point detection and then judged:

1. `ruptures` (PELT, least-squares cost) finds the nights where the series' level changes, with
   a penalty scaled to the series' own noise (robust: the median absolute night-to-night
   difference), so ±8% jitter does not read as a change and a clean 12% step does.
2. A change at night *c* is a regression when at least 3 nights follow it (itself included),
   each of the last 3 nights and the median of the nights since *c* are worse than the baseline
   (the median of up to 7 nights before *c*) by more than 10%. The report names night *c*:
   the night the shift began.
3. Every metric is also compared with the last 7 nights (median), for the dashboard.

Why ruptures and not Apache Otava: both are maintained; Otava's E-divisive is built for exactly
this, but it pins numpy exactly and pulls a BigQuery client, while ruptures needs numpy and scipy
(which plotly's users usually have anyway) and its PELT is enough for series of tens of nights.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

__all__ = ["Finding", "detect", "worse_when_higher"]

THRESHOLD = 0.10
CONSECUTIVE = 3
WINDOW = 7


def worse_when_higher(metric: str) -> bool:
    """Latencies, error rates, recovery times, durations, CPU and memory regress upwards;
    throughput (``*_rps``, ``throughput``) and pass rates regress downwards."""
    return not any(word in metric for word in ("rps", "throughput", "pass_rate", "accepted"))


@dataclass
class Finding:
    metric: str
    regressed: bool
    nights: int
    shift_night: str | None = None
    baseline: float | None = None
    current: float | None = None
    change_pct: float | None = None
    vs_last7_pct: float | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _worse_pct(value: float, baseline: float, higher_is_worse: bool) -> float:
    if baseline == 0:
        return 0.0 if value == 0 else math.inf
    change = (value - baseline) / abs(baseline)
    return change if higher_is_worse else -change


def _change_points(values: list[float]) -> list[int]:
    import numpy as np
    import ruptures

    level = statistics.median(values) or 1.0
    signal = np.array(values, dtype=float) / abs(level)
    diffs = np.abs(np.diff(signal))
    # robust noise estimate: for iid noise, median |x_i - x_{i-1}| ≈ 0.954 sigma; floor at 1%
    sigma = max(float(np.median(diffs)) / 0.954 if len(diffs) else 0.0, 0.01)
    penalty = 3.0 * sigma**2 * math.log(len(values))
    algo = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(signal.reshape(-1, 1))
    return [b for b in algo.predict(pen=penalty) if b < len(values)]


def detect(
    metric: str,
    values: list[float],
    nights: list[str],
    higher_is_worse: bool | None = None,
    threshold: float = THRESHOLD,
    consecutive: int = CONSECUTIVE,
    window: int = WINDOW,
) -> Finding:
    """Judge one metric's history (oldest first, one value per night)."""
    if higher_is_worse is None:
        higher_is_worse = worse_when_higher(metric)
    pairs = [(n, float(v)) for n, v in zip(nights, values) if v is not None]
    nights, values = [n for n, _ in pairs], [v for _, v in pairs]
    finding = Finding(metric=metric, regressed=False, nights=len(values))
    if values:
        finding.current = values[-1]
    if len(values) >= 2:
        last7 = statistics.median(values[-1 - window : -1])
        finding.vs_last7_pct = round(100 * _worse_pct(values[-1], last7, higher_is_worse), 1)
    if len(values) < consecutive + 2:
        finding.reason = f"{len(values)} nights: too few to judge a trend"
        return finding
    for cp in reversed(_change_points(values)):
        after = values[cp:]
        before = values[max(0, cp - window) : cp]
        if len(after) < consecutive or len(before) < 2:
            continue
        baseline = statistics.median(before)
        each = [_worse_pct(v, baseline, higher_is_worse) for v in after[-consecutive:]]
        overall = _worse_pct(statistics.median(after), baseline, higher_is_worse)
        if overall > threshold and all(w > threshold for w in each):
            finding.regressed = True
            finding.shift_night = nights[cp]
            finding.baseline = baseline
            finding.change_pct = round(100 * overall, 1)
            finding.reason = (
                f"{metric} worse by {finding.change_pct:g}% since {nights[cp]} "
                f"({len(after)} nights, each of the last {consecutive} over "
                f"{100 * threshold:g}%) against a baseline of {baseline:.4g}"
            )
            return finding
    finding.reason = f"no shift worse than {100 * threshold:g}% held for {consecutive} nights"
    return finding

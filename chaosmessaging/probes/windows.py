"""Verdicts over a load's time windows: latency and errors before, during and after a fault.

Loads written with ``k6/lib/windows.js`` export, per window of ``WINDOW_S`` seconds, the metrics
``window_<i>_duration`` (Trend, ms), ``window_<i>_failed`` (Rate) and optionally
``window_<i>_<op>_duration``, plus ``window_start_ms`` (the scenario's start, epoch ms). A fault
that recorded its wall-clock ``started_at`` / ``ended_at`` in the run's facts (`exhaust_pool`,
`run_migration`) is mapped onto those windows:

- baseline: windows wholly inside ``[start - baseline_s, start)``; its p95 is the median of their
  p95s (one noisy window does not make the baseline),
- during: windows overlapping ``[start, end]``; its p95 is the worst of theirs, its error rate the
  failed share of all their requests.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, judges_method, verdict

__all__ = [
    "p95_during_within",
    "error_rate_during_within",
    "p95_spiked_and_recovered",
    "latency_stable",
]


def _windows(load: str, window_s: float, configuration: Configuration) -> tuple[list, str | None]:
    """[(start epoch s, end epoch s, metrics of the window)] of load `load`, or a reason."""
    info = runs.fact(f"load:{load}", home=home_of(configuration)) or {}
    path = info.get("summary_path")
    if not path or not Path(path).exists():
        return [], f"no k6 summary for load {load!r} (start_load(label={load!r}) and wait for it)"
    metrics = json.loads(Path(path).read_text()).get("metrics", {})
    start = (metrics.get("window_start_ms") or {}).get("value")
    if not start:
        return [], f"load {load!r} has no window metrics: use a script built on k6/lib/windows.js"
    out, i = [], 0
    while f"window_{i}_failed" in metrics or f"window_{i + 1}_failed" in metrics:
        t0 = start / 1000 + i * float(window_s)
        out.append(
            (
                t0,
                t0 + float(window_s),
                {
                    k[len(f"window_{i}_") :]: v
                    for k, v in metrics.items()
                    if k.startswith(f"window_{i}_")
                },
            )
        )
        i += 1
    return out, None


def _fault(label: str, configuration: Configuration) -> dict | None:
    seen = runs.fact(label, home=home_of(configuration))
    return seen if seen and seen.get("started_at") and seen.get("ended_at") else None


def _p95(window: tuple, metric: str = "duration") -> float | None:
    return (window[2].get(metric) or {}).get("p(95)")


def _split(windows: list, fault: dict, baseline_s: float) -> tuple[list, list, list]:
    start, end = fault["started_at"], fault["ended_at"]
    base = [w for w in windows if w[0] >= start - baseline_s and w[1] <= start and _p95(w)]
    during = [w for w in windows if w[0] <= end and w[1] >= start and _p95(w) is not None]
    after = [w for w in windows if w[0] >= end and _p95(w) is not None]
    return base, during, after


def _prepare(load, fault_label, window_s, configuration):
    windows, missing = _windows(load, window_s, configuration)
    fault = _fault(fault_label, configuration)
    if missing or fault is None:
        return None, None, missing or f"no fault with start and end recorded as {fault_label!r}"
    return windows, fault, None


@judges_method()
def p95_during_within(
    fault: str = "migration",
    load: str = "load",
    factor: float = 2.0,
    baseline_s: float = 10.0,
    floor_ms: float = 10.0,
    window_s: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T13): the load's p95 while the fault/operation recorded as `fault` ran stayed below
    `factor` x the baseline p95 measured in the `baseline_s` seconds just before it (windows
    of `window_s`, as the load's WINDOW_S; the baseline is raised to `floor_ms` so a 3 ms
    baseline does not turn scheduler noise into a failure).
    """
    windows, seen, missing = _prepare(load, fault, window_s, configuration)
    if missing:
        return verdict(False, missing)
    base, during, _ = _split(windows, seen, float(baseline_s))
    if not base or not during:
        return verdict(
            False,
            f"not enough windows: {len(base)} baseline, {len(during)} during "
            f"(raise the load's lead time before {fault!r} above baseline_s)",
        )
    baseline = statistics.median(_p95(w) for w in base)
    worst = max(_p95(w) for w in during)
    limit = float(factor) * max(baseline, float(floor_ms))
    reason = (
        f"p95 during {fault} {worst:.1f} ms vs baseline {baseline:.1f} ms (limit < "
        f"{limit:.1f} ms = {float(factor):g}x max(baseline, {float(floor_ms):g}))"
    )
    logger.info(reason)
    return verdict(
        worst < limit,
        reason,
        p95_during_ms=worst,
        p95_baseline_ms=baseline,
        limit_ms=limit,
        windows_during=len(during),
        windows_baseline=len(base),
    )


@judges_method()
def error_rate_during_within(
    max_rate: float,
    fault: str = "migration",
    load: str = "load",
    window_s: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T13): the share of the load's requests that failed (outside 200..399) in the
    windows overlapping the fault/operation recorded as `fault` is below `max_rate`.
    """
    windows, seen, missing = _prepare(load, fault, window_s, configuration)
    if missing:
        return verdict(False, missing)
    _, during, _ = _split(windows, seen, 0.0)
    failed = sum((w[2].get("failed") or {}).get("passes", 0) for w in during)
    total = failed + sum((w[2].get("failed") or {}).get("fails", 0) for w in during)
    if not total:
        return verdict(False, f"no request of load {load!r} during {fault!r}")
    rate = failed / total
    return verdict(
        rate < float(max_rate),
        f"{failed:g} of {total:g} requests failed during "
        f"{fault} = {rate:.3%} (limit < {float(max_rate):.2%})",
        failed=failed,
        requests=total,
        rate=rate,
    )


@judges_method()
def p95_spiked_and_recovered(
    fault: str = "pool_exhaustion",
    load: str = "load",
    spike_factor: float = 2.0,
    recovery_factor: float = 2.0,
    recover_within_s: float = 20.0,
    baseline_s: float = 10.0,
    floor_ms: float = 10.0,
    window_s: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T10): the load's p95 spiked while the fault recorded as `fault` lasted (worst
    window >= `spike_factor` x baseline) and recovered after it: a window starting within
    `recover_within_s` s of the fault's end, and the last window, are back under
    `recovery_factor` x baseline (baseline floored at `floor_ms`).
    """
    windows, seen, missing = _prepare(load, fault, window_s, configuration)
    if missing:
        return verdict(False, missing)
    base, during, after = _split(windows, seen, float(baseline_s))
    if not base or not during or not after:
        return verdict(
            False,
            f"not enough windows: {len(base)} before, {len(during)} during, "
            f"{len(after)} after {fault!r}",
        )
    baseline = max(statistics.median(_p95(w) for w in base), float(floor_ms))
    worst = max(_p95(w) for w in during)
    calm = float(recovery_factor) * baseline
    first_ok = next((w for w in after if _p95(w) < calm), None)
    recovered_after = round(first_ok[0] - seen["ended_at"], 1) if first_ok else None
    spiked = worst >= float(spike_factor) * baseline
    recovered = (
        first_ok is not None
        and recovered_after <= float(recover_within_s)
        and _p95(after[-1]) < calm
    )
    reason = (
        f"p95 baseline {baseline:.1f} ms, worst during {fault} {worst:.1f} ms "
        f"({'spiked' if spiked else 'no spike'}), back under {calm:.1f} ms "
        + (
            f"{recovered_after:g}s after it, last window {_p95(after[-1]):.1f} ms"
            if first_ok
            else "never"
        )
    )
    return verdict(
        spiked and recovered,
        reason,
        p95_baseline_ms=baseline,
        p95_worst_ms=worst,
        recovered_after_s=recovered_after,
        p95_last_ms=_p95(after[-1]),
    )


@judges_method()
def latency_stable(
    ops: list,
    load: str = "load",
    windows: int = 2,
    max_ratio: float = 1.5,
    floor_ms: float = 10.0,
    stat: str = "p(95)",
    window_s: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T7): each operation's latency did not degrade over the soak: the `stat` (p(95),
    avg, med) of `window_<i>_<op>_duration` in the last `windows` full windows is at most
    `max_ratio` x that of the first `windows` windows (both floored at `floor_ms`).
    """
    found, missing = _windows(load, window_s, configuration)
    if missing:
        return verdict(False, missing)
    full = found[:-1] if len(found) > 2 else found  # the last window is the graceful-stop tail
    n = int(windows)
    if len(full) < 2 * n:
        return verdict(False, f"{len(full)} windows: too few to compare {n} first with {n} last")
    figures, bad = {}, []
    for op in ops:

        def value(ws, op=op):
            vals = [(w[2].get(f"{op}_duration") or {}).get(stat) for w in ws]
            vals = [v for v in vals if v is not None]
            return statistics.median(vals) if vals else None

        first, last = value(full[:n]), value(full[-n:])
        if first is None or last is None:
            bad.append(op)
            figures[op] = {"first_ms": first, "last_ms": last, "ratio": None}
            continue
        ratio = max(last, float(floor_ms)) / max(first, float(floor_ms))
        figures[op] = {
            "first_ms": round(first, 2),
            "last_ms": round(last, 2),
            "ratio": round(ratio, 3),
        }
        if ratio > float(max_ratio):
            bad.append(op)
    reason = (
        f"{stat} first vs last {n} window(s): "
        + ", ".join(f"{op} {f['first_ms']}->{f['last_ms']} ms" for op, f in figures.items())
        + (f"; degraded or missing: {bad}" if bad else f" (limit {float(max_ratio):g}x)")
    )
    return verdict(not bad, reason, ops=figures)

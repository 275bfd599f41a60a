"""Verdicts over the metric series `chaosmessaging.actions.sampling.sample_metrics` recorded.

A soak passes on what happened during the whole run: the highest lag sample (not one reading at
the end) and memory growth between the first and the last window of samples (from samples over
the run, not two points). Like every verdict of this extension they hold trivially in the
hypothesis' first pass (before the method's `mark("method")`) and, after it, fail when the
samples are missing. Each returns a `Verdict` with the per-service figures behind it, so the
journal shows why.
"""

from __future__ import annotations

import math

from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.platform.metrics import maps_metrics
from chaosmessaging.clients.samples import read_samples
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, held_before_method, verdict

__all__ = ["sampled_max_within", "memory_growth_within"]

MEMORY_METRIC = "process_resident_memory_bytes"


@maps_metrics
def sampled_max_within(
    label: str,
    metric: str,
    limit: float,
    service: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Whether every sample of `metric` recorded by `sample_metrics(label=...)` stayed strictly
    below `limit` — on `service`, or on every sampled service that exposes it (at least one
    must). Returns
    `{"ok", "limit", "max", "services": {name: {"samples", "max", "at_s", "over_limit"}}}`
    (`at_s`: seconds into the sampling when the max was seen; `over_limit`: how many samples
    reached the limit). Holds before the method; after it, missing samples fail.
    """
    limit = float(limit)
    home = home_of(configuration)
    if held := held_before_method(configuration, limit=limit, max=None, services={}):
        return held
    recorded, missing = _samples(label, home)
    if recorded is None:
        return verdict(False, missing, limit=limit, max=None, services={})
    names = [service] if service else sorted(recorded["services"])
    figures = {}
    for name in names:
        points = _points(recorded, name, metric)
        if points:
            at, top = max(points, key=lambda p: p[1])
            figures[name] = {
                "samples": len(points),
                "max": top,
                "at_s": at,
                "over_limit": sum(1 for _, v in points if v >= limit),
            }
    reason = None
    if not figures:
        reason = (
            f"no sample of {metric} on {service or 'any service'} under label {label!r} "
            f"(sampled: {sorted(recorded['services'])})"
        )
    top = max((f["max"] for f in figures.values()), default=None)
    ok = reason is None and all(f["over_limit"] == 0 for f in figures.values())
    if reason:
        logger.warning(reason)
    else:
        reason = f"{metric} max over {label!r}: {top:g} (limit < {limit:g})"
        logger.info(f"{reason} -> {'ok' if ok else 'BREACHED'}")
    return verdict(ok, reason, limit=limit, max=top, services=figures)


@maps_metrics
def memory_growth_within(
    label: str,
    max_percent: float,
    window_fraction: float = 0.2,
    services: list = None,
    metric: str = MEMORY_METRIC,
    min_samples: int = 10,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Whether each service's memory (`metric`, default process_resident_memory_bytes) grew by
    less than `max_percent` % between the first and the last `window_fraction` of the samples
    recorded by `sample_metrics(label=...)`, comparing the mean of each window (one GC pause or
    spike does not decide). Needs at least `min_samples` samples per service. Returns
    `{"ok", "max_percent", "services": {name: {"samples", "window", "first_mean_bytes",
    "last_mean_bytes", "growth_percent", "ok"}}}`. Holds before the method; after it, missing
    samples fail.
    """
    max_percent, fraction = float(max_percent), float(window_fraction)
    if not 0 < fraction <= 0.5:
        return verdict(
            False,
            f"window_fraction={fraction:g} must be in (0, 0.5]: the first and "
            "last windows must not overlap",
            max_percent=max_percent,
            services={},
        )
    if held := held_before_method(configuration, max_percent=max_percent, services={}):
        return held
    home = home_of(configuration)
    recorded, missing = _samples(label, home)
    if recorded is None:
        return verdict(False, missing, max_percent=max_percent, services={})
    figures, problems = {}, []
    for name in services or sorted(recorded["services"]):
        values = [v for _, v in _points(recorded, name, metric)]
        if len(values) < max(int(min_samples), 2):
            problems.append(f"{name}: {len(values)} samples of {metric}, need {min_samples}")
            continue
        window = max(1, math.floor(len(values) * fraction))
        first = sum(values[:window]) / window
        last = sum(values[-window:]) / window
        growth = (last - first) / first * 100 if first else math.inf
        figures[name] = {
            "samples": len(values),
            "window": window,
            "first_mean_bytes": round(first),
            "last_mean_bytes": round(last),
            "growth_percent": round(growth, 2),
            "ok": growth < max_percent,
        }
        logger.info(
            f"{name} {metric}: {first / 2**20:.1f} MiB -> {last / 2**20:.1f} MiB "
            f"({growth:+.1f} %, limit < {max_percent:g} %)"
        )
    ok = not problems and bool(figures) and all(f["ok"] for f in figures.values())
    if problems:
        reason = "; ".join(problems)
        logger.warning(f"memory verdict {label!r}: {reason}")
    else:
        reason = "memory growth " + ", ".join(
            f"{n} {f['growth_percent']:+g} %" for n, f in figures.items()
        )
        reason += f" (limit < {max_percent:g} %)"
    return verdict(ok, reason, max_percent=max_percent, window_fraction=fraction, services=figures)


def _samples(label: str, home: str | None) -> tuple[dict | None, str | None]:
    """(recorded samples, None) or (None, why they are missing)."""
    recorded = read_samples(label, home)
    if recorded is not None:
        return recorded, None
    return None, (
        f"no samples labelled {label!r} in this run: did the method run "
        f"sample_metrics(label={label!r}) and did it finish?"
    )


def _points(recorded: dict, service: str, metric: str) -> list[tuple[float, float]]:
    series = recorded["services"].get(service) or {}
    return [
        (t, float(v))
        for t, v in zip(series.get("t", []), series.get(metric, []), strict=False)
        if v is not None
    ]

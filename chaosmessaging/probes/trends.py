"""Verdicts over the metric series `chaosmessaging.actions.sampling.sample_metrics` recorded.

A soak passes on what happened during the whole run: the highest lag sample (not one reading at
the end) and memory growth between the first and the last window of samples (from samples over
the run, not two points), and memory growth per message (a slope of each service's memory against
the count of messages handled, over all the samples after a warm-up: a leak of a kilobyte per
message is small against a service's memory but steady, so it shows as a slope long before it
shows as a percentage). Like every verdict of this extension they hold trivially in the
hypothesis' first pass (before the method's `mark("method")`) and, after it, fail when the
samples are missing. Each returns a `Verdict` with the per-service figures behind it, so the
journal shows why.
"""

from __future__ import annotations

import math

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.platform.metrics import maps_metrics
from chaosmessaging.clients.samples import read_samples
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, argument, judges_method, logged, verdict

__all__ = ["sampled_max_within", "memory_growth_within", "memory_per_message_within"]

MEMORY_METRIC = "process_resident_memory_bytes"


@maps_metrics
@judges_method(limit=argument("limit", float), max=None, services={})
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
    recorded, missing = _samples(label, home_of(configuration))
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
    if reason:
        logger.warning(reason)
        return verdict(False, reason, limit=limit, max=top, services=figures)
    ok = all(f["over_limit"] == 0 for f in figures.values())
    reason = f"{metric} max over {label!r}: {top:g} (limit < {limit:g})"
    return logged(verdict(ok, reason, limit=limit, max=top, services=figures))


def _windows_apart(arguments: dict) -> Verdict | None:
    max_percent, fraction = float(arguments["max_percent"]), float(arguments["window_fraction"])
    if 0 < fraction <= 0.5:
        return None
    return verdict(
        False,
        f"window_fraction={fraction:g} must be in (0, 0.5]: the first and "
        "last windows must not overlap",
        max_percent=max_percent,
        services={},
    )


@maps_metrics
@judges_method(_windows_apart, max_percent=argument("max_percent", float), services={})
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
    recorded, missing = _samples(label, home_of(configuration))
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


def theil_sen(points: list[tuple[float, float]]) -> float | None:
    """The median of the slopes between every two points with different x (Theil-Sen): a
    slope that one step (an arena the allocator grabs, a GC pause) does not decide."""
    slopes = sorted(
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(points)
        for x2, y2 in points[i + 1 :]
        if x2 != x1
    )
    if not slopes:
        return None
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def _warmup_valid(arguments: dict) -> None:
    warmup = float(arguments["warmup_fraction"])
    if not 0 <= warmup < 1:
        raise ActivityFailed(f"warmup_fraction={warmup:g} must be in [0, 1)")


@judges_method(
    _warmup_valid, max_bytes_per_message=argument("max_bytes_per_message", float), services={}
)
def memory_per_message_within(
    label: str,
    max_bytes_per_message: float,
    counter: str = "messaging_messages_accepted_total",
    counter_service: str = "api",
    services: list = None,
    warmup_fraction: float = 0.2,
    metric: str = MEMORY_METRIC,
    min_messages: int = 500,
    min_samples: int = 10,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Whether each service's memory (`metric`, default process_resident_memory_bytes: every
    process of the service, summed) grew by less than `max_bytes_per_message` bytes per
    message: the Theil-Sen slope of memory against `counter` (messages handled, sampled on
    `counter_service` at the same ticks by `sample_metrics(label=...)`), over the samples after
    the first `warmup_fraction` (pools and caches filling). At least `min_messages` messages
    and `min_samples` samples must remain after the warm-up. Returns `{"ok",
    "max_bytes_per_message", "services": {name: {"samples", "messages", "bytes_per_message",
    "growth_bytes", "ok"}}}`. Holds before the method; after it, missing samples fail.
    """
    limit, warmup = float(max_bytes_per_message), float(warmup_fraction)
    recorded, missing = _samples(label, home_of(configuration))
    if recorded is None:
        return verdict(False, missing, max_bytes_per_message=limit, services={})
    counts = (recorded["services"].get(counter_service) or {}).get(counter) or []
    figures, problems = {}, []
    for name in services or sorted(recorded["services"]):
        memory = (recorded["services"].get(name) or {}).get(metric) or []
        pairs = [
            (float(c), float(m))
            for c, m in zip(counts, memory, strict=False)
            if c is not None and m is not None
        ]
        pairs = pairs[math.floor(len(pairs) * warmup) :]
        messages = pairs[-1][0] - pairs[0][0] if pairs else 0.0
        if len(pairs) < max(int(min_samples), 2) or messages < int(min_messages):
            problems.append(
                f"{name}: {len(pairs)} samples and {messages:g} messages after the warm-up "
                f"({counter} on {counter_service} beside {metric}), need {min_samples} and "
                f"{min_messages}"
            )
            continue
        slope = theil_sen(pairs) or 0.0
        figures[name] = {
            "samples": len(pairs),
            "messages": round(messages),
            "bytes_per_message": round(slope, 1),
            "growth_bytes": round(pairs[-1][1] - pairs[0][1]),
            "ok": slope < limit,
        }
        logger.info(
            f"{name} {metric}: {slope:+.0f} bytes/message over {messages:g} messages "
            f"(limit < {limit:g})"
        )
    ok = not problems and bool(figures) and all(f["ok"] for f in figures.values())
    if problems:
        reason = "; ".join(problems)
        logger.warning(f"memory per message {label!r}: {reason}")
    else:
        reason = "memory growth per message " + ", ".join(
            f"{n} {f['bytes_per_message']:+g} B" for n, f in figures.items()
        )
        reason += f" (limit < {limit:g} B/message)"
    return verdict(ok, reason, max_bytes_per_message=limit, services=figures)


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

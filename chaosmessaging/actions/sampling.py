"""Sample the services' Prometheus metrics over a run, for verdicts about a whole soak.

A soak's criteria are about the run, not an instant: "consumer lag < 5 s *throughout*", "memory
stable" (first vs last window of samples, not two points). `sample_metrics` reads each service's
metrics (its `/metrics`, or Prometheus with `metrics_source: prometheus`) every `interval_s`
seconds for `duration_s` seconds and records the series beside the run's facts, in
`<home>/runs/<run id>.samples-<label>.json` (`samples_path`); the verdicts live in
`chaosmessaging.probes.trends`.

It is meant to run beside the load (``"background": true`` in the method). Two consequences:

- chaoslib waits for background activities before it ends the method, even after Ctrl-C/SIGTERM.
  The sampler therefore also stops as soon as the `fault-safety-net` control saw an interruption
  (it reads that control's stop flag), so an interrupted 30-minute soak does not sit waiting.
- `chaosmessaging.runs.record` rewrites the facts file (read, modify, replace) without a lock,
  and the method thread records facts at the same time (a load's end lands within a second of the
  sampling's end in a soak). A background thread calling it could silently drop the other
  writer's fact or its own, so the series goes to a file of its own, which only this action
  writes, named from the run id so the verdicts find it without a facts entry.

Reading reuses `chaosmessaging.clients.prometheus` (prometheus-client's own parser, or PromQL summed
over replicas); one read per service per tick serves every metric. From Prometheus a tick takes what
the server holds (no wait for a fresh scrape): the series' resolution is its scrape interval.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.clients.prometheus import metrics_source, select
from chaosmessaging.platform.metrics import MetricNotApplicable, metric_name
from chaosmessaging.clients.samples import samples_path
from chaosmessaging.util import atomic_write_json
from chaosmessaging.util import home_of

__all__ = ["sample_metrics"]

#: below this an interval mostly measures the scrape itself (and loads the services)
MIN_INTERVAL_S = 0.2
#: default metrics: the soak's lag criteria and process RSS (prometheus-client exports it on Linux)
DEFAULT_METRICS = (
    "process_resident_memory_bytes",
    "messaging_consumer_lag_seconds",
    "messaging_dispatch_lag_seconds",
)
DEFAULT_SERVICES = ("api", "dispatcher", "consumer")


def _platform_metric(name: str, configuration: Configuration, secrets: Secrets) -> str | None:
    try:
        return metric_name(name, configuration, secrets)
    except MetricNotApplicable:
        return None


def sample_metrics(
    duration_s: float,
    interval_s: float = 1.0,
    label: str = "soak",
    services: list = None,
    metrics: list = None,
    max_samples: int = 100000,
    timeout: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Scrape `metrics` (default: process_resident_memory_bytes, messaging_consumer_lag_seconds,
    messaging_dispatch_lag_seconds) from each of `services` (default: api, dispatcher,
    consumer) every `interval_s` seconds for `duration_s` seconds, and record the series beside
    the run's facts (label: letters, digits, `_.-`) for the `chaosmessaging.probes.trends`
    verdicts. Run it
    with `"background": true` beside a load. A failed scrape is kept as a gap (null values) and
    counted, not raised. Refuses `interval_s` < 0.2 and runs of more than `max_samples` ticks;
    stops early when the run is interrupted. Returns a summary: ticks, errors, and per service
    and metric the sample count, min, mean, max, first and last value, and the file's path.
    """
    duration_s, interval_s = _checked(duration_s, interval_s, max_samples, label)
    services = list(services or DEFAULT_SERVICES)
    # the platform's names for the metric roles (a role it does not have is not sampled: its
    # verdicts say "n/a")
    metrics = [
        m
        for m in (_platform_metric(x, configuration, secrets) for x in metrics or DEFAULT_METRICS)
        if m
    ]
    # resolve every address up front: a wrong service name fails now, not after 30 minutes
    sources = {s: metrics_source(s, None, configuration, secrets) for s in services}
    path = samples_path(label, home_of(configuration))
    logger.info(
        f"sampling {metrics} from {services} every {interval_s:g}s for {duration_s:g}s "
        f"(label {label!r})"
    )
    sampler = Sampler(sources, metrics, interval_s, duration_s, timeout)
    sampler.run()
    summary = sampler.save(path, label)
    logger.info(f"sampling {label!r} ended: {sampler.ticks} ticks, scrape errors {sampler.errors}")
    return summary


def _checked(duration_s: float, interval_s: float, max_samples: int, label: str) -> tuple:
    """(duration_s, interval_s) as numbers, once the interval, the duration, the number of
    ticks and the label (it names the samples file) are acceptable."""
    duration_s, interval_s = float(duration_s), float(interval_s)
    if interval_s < MIN_INTERVAL_S:
        raise ActivityFailed(
            f"interval_s={interval_s:g} is below {MIN_INTERVAL_S} s: sampling "
            "that often mostly measures the scrape; use 0.2 s or more"
        )
    if duration_s <= 0:
        raise ActivityFailed(f"duration_s={duration_s:g} must be positive")
    ticks = int(duration_s // interval_s) + 1
    if ticks > int(max_samples):
        raise ActivityFailed(
            f"{duration_s:g} s every {interval_s:g} s is {ticks} samples, over "
            f"max_samples={max_samples}: raise interval_s or max_samples"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(label)):
        raise ActivityFailed(
            f"label {label!r} must be letters, digits, '_', '.' or '-' (it names the samples file)"
        )
    return duration_s, interval_s


class Sampler:
    """Reads `metrics` from each of `sources` ({service: a `clients.prometheus` source}) every
    `interval_s` seconds on a fixed grid for `duration_s` seconds (or until the run is
    interrupted); a failed scrape is a gap (None values) counted in `errors`. `sample_metrics`
    is its entry point; tests drive it with their own sources."""

    def __init__(
        self,
        sources: dict,
        metrics: list[str],
        interval_s: float,
        duration_s: float,
        timeout: float = 5.0,
    ) -> None:
        self.sources, self.metrics = sources, metrics
        self.interval_s, self.duration_s, self.timeout = interval_s, duration_s, float(timeout)
        self.series = {s: {"t": [], **{m: [] for m in metrics}} for s in sources}
        self.errors = {s: 0 for s in sources}
        self.ticks = 0
        self.started_at = self.ended_at = 0.0

    def run(self) -> None:
        self.started_at, start = time.time(), time.monotonic()
        while True:
            for service, source in self.sources.items():
                self._read(service, source, round(time.monotonic() - start, 3))
            self.ticks += 1
            # a fixed grid from the start, so slow scrapes do not stretch the run
            next_at = start + self.ticks * self.interval_s
            if next_at - start > self.duration_s + 1e-9 or _interrupted():
                break
            time.sleep(max(0.0, next_at - time.monotonic()))
        self.ended_at = time.time()

    def _read(self, service: str, source: Any, offset: float) -> None:
        try:
            scraped = source.samples(min(self.timeout, max(self.interval_s, 1.0)), fresh=False)
        except ActivityFailed as error:
            if not self.errors[service]:
                logger.warning(f"sampling {service}: {error} (kept as a gap)")
            self.errors[service] += 1
            scraped = None
        self.series[service]["t"].append(offset)
        for metric in self.metrics:
            value = select(scraped, metric, {}) if scraped is not None else None
            self.series[service][metric].append(value)

    def save(self, path: Path, label: str) -> dict:
        """Write the series to `path`; the summary `sample_metrics` returns."""
        atomic_write_json(
            path,
            {
                "label": label,
                "interval_s": self.interval_s,
                "duration_s": self.duration_s,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "interrupted": _interrupted(),
                "errors": self.errors,
                "services": self.series,
            },
            indent=None,
        )
        return {
            "label": label,
            "ticks": self.ticks,
            "seconds": round(self.ended_at - self.started_at, 1),
            "errors": self.errors,
            "interrupted": _interrupted(),
            "path": str(path),
            "figures": {
                s: {m: _describe(self.series[s][m]) for m in self.metrics} for s in self.series
            },
        }


def _describe(values: list) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"count": 0}
    return {
        "count": len(present),
        "min": min(present),
        "mean": sum(present) / len(present),
        "max": max(present),
        "first": present[0],
        "last": present[-1],
    }


def _interrupted() -> bool:
    """True once the fault-safety-net control saw SIGINT/SIGTERM in this process (if loaded)."""
    safety = sys.modules.get("chaosmessaging.controls.safety")
    return safety is not None and safety.stop_requested()

"""Sample the services' Prometheus metrics over a run, for verdicts about a whole soak.

A soak's criteria are about the run, not an instant: "consumer lag < 5 s *throughout*", "memory
stable" (first vs last window of samples, not two points). `sample_metrics` scrapes each service's
`/metrics` every `interval_s` seconds for `duration_s` seconds and records the series beside the
run's facts, in `<home>/runs/<run id>.samples-<label>.json` (`samples_path`); the verdicts live in
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

Scraping and parsing reuse `chaosmessaging.clients.prometheus` (prometheus-client's own parser); one
scrape per service per tick serves every metric.
"""

from __future__ import annotations

import re
import sys
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.platform.metrics import MetricNotApplicable, metric_name
from chaosmessaging.clients.http import service_url
from chaosmessaging.clients.prometheus import scrape, select
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
    services = list(services or DEFAULT_SERVICES)
    # the platform's names for the metric roles (a role it does not have is not sampled: its
    # verdicts say "n/a")
    metrics = [
        m
        for m in (_platform_metric(x, configuration, secrets) for x in metrics or DEFAULT_METRICS)
        if m
    ]
    # resolve every address up front: a wrong service name fails now, not after 30 minutes
    urls = {s: service_url(s, None, "/metrics", configuration, secrets) for s in services}
    home = home_of(configuration)
    path = samples_path(label, home)

    series = {s: {"t": [], **{m: [] for m in metrics}} for s in services}
    errors = {s: 0 for s in services}
    started_at, start = time.time(), time.monotonic()
    logger.info(
        f"sampling {metrics} from {services} every {interval_s:g}s for {duration_s:g}s "
        f"(label {label!r})"
    )
    tick = 0
    while True:
        for service, url in urls.items():
            offset = round(time.monotonic() - start, 3)
            try:
                scraped = scrape(url, min(float(timeout), max(interval_s, 1.0)))
            except ActivityFailed as error:
                if not errors[service]:
                    logger.warning(f"sampling {service}: {error} (kept as a gap)")
                errors[service] += 1
                scraped = None
            series[service]["t"].append(offset)
            for metric in metrics:
                value = select(scraped, metric, {}) if scraped is not None else None
                series[service][metric].append(value)
        tick += 1
        # a fixed grid from the start, so slow scrapes do not stretch the run
        next_at = start + tick * interval_s
        if next_at - start > duration_s + 1e-9 or _interrupted():
            break
        time.sleep(max(0.0, next_at - time.monotonic()))

    ended_at = time.time()
    atomic_write_json(
        path,
        {
            "label": label,
            "interval_s": interval_s,
            "duration_s": duration_s,
            "started_at": started_at,
            "ended_at": ended_at,
            "interrupted": _interrupted(),
            "errors": errors,
            "services": series,
        },
        indent=None,
    )
    summary = {
        "label": label,
        "ticks": tick,
        "seconds": round(ended_at - started_at, 1),
        "errors": errors,
        "interrupted": _interrupted(),
        "path": str(path),
        "figures": {s: {m: _describe(series[s][m]) for m in metrics} for s in services},
    }
    logger.info(f"sampling {label!r} ended: {tick} ticks, scrape errors {errors}")
    return summary


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

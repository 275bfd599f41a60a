"""Prometheus probes: read one metric from a service's `/metrics` text exposition.

Parsing uses prometheus-client's own text parser rather than regexes. `name` is a sample
name as it appears in the exposition (`messaging_consumer_delivered_total`,
`messaging_message_size_bytes_count`, `..._bucket` with `{"le": "1024.0"}`) or, for a
counter, its family name without `_total`. Every sample whose labels include `labels` is
summed, so `ws_close_total` without labels is the total over all codes.
"""

import difflib

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.config import redact
from chaosmessaging.clients.http import service_url
from chaosmessaging.clients.prometheus import candidates, scrape, select
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, held_before_method, verdict

__all__ = ["metric_increased", "metric_sum", "metric_value", "snapshot_metric"]


def metric_value(name: str, labels: dict = None, url: str = None, service: str = "api",
                 default: float = None, timeout: float = 5.0,
                 configuration: Configuration = None, secrets: Secrets = None) -> float:
    """
    Value of the metric `name` scraped from the service's `/metrics` (or `url`), summed over
    the samples whose labels include `labels`. A missing metric raises an error naming the
    closest metric names, unless `default` is given (then `default` is returned).
    """
    url = service_url(service, url, "/metrics", configuration, secrets)
    samples = scrape(url, timeout)
    value = select(samples, name, labels or {})
    if value is not None:
        return value
    if default is not None:
        return float(default)
    names = sorted({s_name for s_name, _, _ in samples})
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    with_name = [s_labels for s_name, s_labels, _ in samples if s_name in candidates(name)]
    detail = (f"labels {labels} match none of {with_name[:5]}" if with_name
              else f"closest names: {close or 'none'}")
    raise ActivityFailed(f"metric '{name}' not found at {redact(url)} ({detail}); pass "
                         "`default` if its absence is expected")


def snapshot_metric(label: str, name: str, labels: dict = None, url: str = None,
                    service: str = "api", default: float = None,
                    configuration: Configuration = None, secrets: Secrets = None) -> float:
    """
    Read `metric_value(name, labels)` now and record it in the run's facts under `label`, so a
    later `metric_increased(since=label, ...)` can judge what the method changed.
    """
    value = metric_value(name, labels, url, service, default, configuration=configuration,
                         secrets=secrets)
    runs.record(f"metric:{label}", {"name": name, "labels": labels or {}, "value": value},
                home=home_of(configuration))
    return value


def metric_increased(since: str, name: str, labels: dict = None, url: str = None,
                     service: str = "api", min_increase: float = 1.0,
                     configuration: Configuration = None, secrets: Secrets = None) -> Verdict:
    """
    Verdict: the metric grew by at least `min_increase` since the snapshot `since` (see
    `snapshot_metric`), e.g. proof that a fault made the dispatcher park rows (figures:
    `before`, `now`, `grew`). Holds before the method ran; after it, a missing snapshot fails.
    """
    if held := held_before_method(configuration):
        return held
    snapshot = runs.fact(f"metric:{since}", home=home_of(configuration))
    if snapshot is None:
        return verdict(False, f"no snapshot {since!r} of {name}: add snapshot_metric("
                       f"label={since!r}) to the method", before=None, now=None, grew=None)
    now = metric_value(name, labels, url, service, default=0.0, configuration=configuration,
                       secrets=secrets)
    grew = now - float(snapshot["value"])
    reason = f"{name}{labels or ''} grew by {grew:g} since {since} (need {float(min_increase):g})"
    logger.info(reason)
    return verdict(grew >= float(min_increase), reason, before=float(snapshot["value"]), now=now,
                   grew=grew)


def metric_sum(name: str, labels: dict = None, urls: list = None, services: list = None,
               default: float = 0.0, timeout: float = 5.0, configuration: Configuration = None,
               secrets: Secrets = None) -> float:
    """
    Sum of `metric_value(name, labels)` over several endpoints: the `/metrics` URLs in `urls`
    and/or the named `services` (default: api, dispatcher and consumer when `urls` is
    empty). A service that lacks the metric counts as `default`; an unreachable one is an error.
    """
    targets = list(urls or [])
    if services or not targets:
        targets += [service_url(s, None, "/metrics", configuration, secrets)
                    for s in (services or ["api", "dispatcher", "consumer"])]
    return float(sum(metric_value(name, labels, target, default=default, timeout=timeout)
                     for target in targets))

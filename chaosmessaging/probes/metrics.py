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
from prometheus_client.parser import text_string_to_metric_families

from chaosmessaging.config import redact
from chaosmessaging.probes._clients import http_get, service_url

__all__ = ["metric_sum", "metric_value"]


def metric_value(name: str, labels: dict = None, url: str = None, service: str = "api",
                 default: float = None, timeout: float = 5.0,
                 configuration: Configuration = None, secrets: Secrets = None) -> float:
    """
    Value of the metric `name` scraped from the service's `/metrics` (or `url`), summed over
    the samples whose labels include `labels`. A missing metric raises an error naming the
    closest metric names, unless `default` is given (then `default` is returned).
    """
    url = service_url(service, url, "/metrics", configuration, secrets)
    samples = _scrape(url, timeout)
    value = _select(samples, name, labels or {})
    if value is not None:
        return value
    if default is not None:
        return float(default)
    names = sorted({s_name for s_name, _, _ in samples})
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    with_name = [s_labels for s_name, s_labels, _ in samples if s_name in _candidates(name)]
    detail = (f"labels {labels} match none of {with_name[:5]}" if with_name
              else f"closest names: {close or 'none'}")
    raise ActivityFailed(f"metric '{name}' not found at {redact(url)} ({detail}); pass "
                         "`default` if its absence is expected")


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


def _scrape(url: str, timeout: float) -> list[tuple[str, dict, float]]:
    response = http_get(url, timeout)
    if response.status_code != 200:
        raise ActivityFailed(f"{redact(url)} answered HTTP {response.status_code}; "
                             "is it a Prometheus /metrics endpoint?")
    try:
        return [(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(response.text)
                for s in family.samples]
    except ValueError as error:
        raise ActivityFailed(f"{redact(url)} is not Prometheus text format: {error}") from None


def _candidates(name: str) -> tuple[str, ...]:
    # a counter's family name stands for its `_total` sample
    return (name,) if name.endswith("_total") else (name, f"{name}_total")


def _select(samples: list[tuple[str, dict, float]], name: str, labels: dict) -> float | None:
    wanted = {k: str(v) for k, v in labels.items()}
    for candidate in _candidates(name):
        values = [value for s_name, s_labels, value in samples if s_name == candidate
                  and all(s_labels.get(k) == v for k, v in wanted.items())]
        if values:
            return float(sum(values))
    return None

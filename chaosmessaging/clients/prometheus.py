"""Prometheus: read a `/metrics` endpoint (shared by the metrics probes and the sampler).

Parsing uses prometheus-client's own text parser rather than regexes.
"""

from chaoslib.exceptions import ActivityFailed
from prometheus_client.parser import text_string_to_metric_families

from chaosmessaging.config import redact
from chaosmessaging.clients.http import http_get

Sample = tuple[str, dict, float]


def scrape(url: str, timeout: float) -> list[Sample]:
    response = http_get(url, timeout)
    if response.status_code != 200:
        raise ActivityFailed(
            f"{redact(url)} answered HTTP {response.status_code}; "
            "is it a Prometheus /metrics endpoint?"
        )
    try:
        return [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        ]
    except ValueError as error:
        raise ActivityFailed(f"{redact(url)} is not Prometheus text format: {error}") from None


def candidates(name: str) -> tuple[str, ...]:
    # a counter's family name stands for its `_total` sample
    return (name,) if name.endswith("_total") else (name, f"{name}_total")


def select(samples: list[Sample], name: str, labels: dict) -> float | None:
    wanted = {k: str(v) for k, v in labels.items()}
    for candidate in candidates(name):
        values = [
            value
            for s_name, s_labels, value in samples
            if s_name == candidate and all(s_labels.get(k) == v for k, v in wanted.items())
        ]
        if values:
            return float(sum(values))
    return None

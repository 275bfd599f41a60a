"""Prometheus: where a service's metrics are read (shared by the metrics probes and samplers).

`metrics_source(service, ...)` gives a source with one method, `samples()`: either a scrape of the
service's `/metrics` (parsed with prometheus-client's own text parser rather than regexes) or a
PromQL query to a Prometheus server (prometheus-api-client) summing the service's replicas.
"""

from __future__ import annotations

import json
import re
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from prometheus_client.parser import text_string_to_metric_families

from chaosmessaging import targets
from chaosmessaging.config import lookup, redact
from chaosmessaging.clients.http import http_get, service_url

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


# --- where a service's metrics come from ------------------------------------------------------
#
# Two roads, one shape: a source answers `samples()` with the same (name, labels, value) triples a
# scrape of one `/metrics` gives, so every probe and sampler reads one interface and never knows
# which road it took. `scrape` reads the service's own endpoint (the embedded stack: one address
# per service). `prometheus` asks a Prometheus server with PromQL for the service's series summed
# over its replicas and worker processes (`sum without (instance, pod, ...)`): behind a Kubernetes
# Service or any load balancer, a scrape reads one random replica; Prometheus has them all.

SOURCES = ("scrape", "prometheus")

#: labels that tell replicas apart (Prometheus' target labels and the usual Kubernetes ones);
#: summed away. Override with the configuration key `prometheus_replica_labels`.
REPLICA_LABELS = (
    "instance",
    "job",
    "pod",
    "pod_name",
    "namespace",
    "container",
    "node",
    "endpoint",
    "service",
)

# the metric name survives `sum without (...)` only as an ordinary label
_NAME_LABEL = "chaosmessaging_metric_name"
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ScrapeSource:
    """A service's own `/metrics` endpoint (one replica: the one the address reaches)."""

    def __init__(self, url: str):
        self.url = url
        self.where = redact(url)

    def samples(self, timeout: float = 5.0, fresh: bool = True) -> list[Sample]:
        return scrape(self.url, timeout)


class PrometheusSource:
    """A service's series in a Prometheus server, summed over replicas with PromQL.

    `selector` is the PromQL label matcher of the service's targets (default `job="<service>"`).
    With `fresh`, a read first waits (up to `fresh_within_s`) until Prometheus has scraped every
    target of the selector after the call began, so a verdict never judges data older than the
    method it follows.
    """

    def __init__(
        self,
        base_url: str,
        selector: str,
        replica_labels: tuple[str, ...] = REPLICA_LABELS,
        fresh_within_s: float = 30.0,
    ):
        from prometheus_api_client import PrometheusConnect  # light: requests + dateparser

        self.base_url, self.selector = base_url.rstrip("/"), selector
        self.replica_labels = tuple(replica_labels)
        self.fresh_within_s = float(fresh_within_s)
        self.where = f"Prometheus {redact(self.base_url)} {{{selector}}}"
        self._client = PrometheusConnect(url=self.base_url, disable_ssl=True)

    def query(self, promql: str, timeout: float = 5.0) -> list[tuple[dict, float]]:
        """Instant query -> [(labels, value)]; an unreachable server or a refused query is an
        `ActivityFailed` naming the server (never the system under test)."""
        from prometheus_api_client import PrometheusApiClientException
        from requests import RequestException

        try:
            result = self._client.custom_query(query=promql, timeout=max(1, int(timeout)))
        except (RequestException, PrometheusApiClientException) as error:
            raise ActivityFailed(
                f"{self.where} did not answer `{promql}`: {error}; is prometheus_url right "
                "and the server up?"
            ) from None
        return [(dict(r["metric"]), float(r["value"][1])) for r in result]

    def targets_up(self, timeout: float = 5.0) -> tuple[int, int, float]:
        """(targets, targets up, oldest last-scrape time) of the selector."""
        rows = self.query(f"up{{{self.selector}}}", timeout)
        oldest = self.query(f"min(timestamp(up{{{self.selector}}}))", timeout)
        return (
            len(rows),
            sum(1 for _, v in rows if v == 1.0),
            oldest[0][1] if oldest else 0.0,
        )

    def wait_fresh(self, timeout: float = 5.0) -> int:
        """Wait until every target was scraped after now; returns how many targets are up."""
        began = time.time()
        while True:
            count, up, oldest = self.targets_up(timeout)
            if count and oldest >= began:
                return up
            if time.time() - began <= self.fresh_within_s:
                time.sleep(0.25)
                continue
            if count == 0:
                raise ActivityFailed(
                    f"{self.where} has no scrape target matching {{{self.selector}}}: set "
                    'prometheus_selectors for this service (e.g. {"api": '
                    '"job=\\"api\\""}) to the labels of its targets'
                )
            raise ActivityFailed(
                f"{self.where} has not scraped every target of {{{self.selector}}} within "
                f"{self.fresh_within_s:g} s; lower its scrape_interval or raise "
                "prometheus_fresh_within_s"
            )

    def samples(self, timeout: float = 5.0, fresh: bool = True) -> list[Sample]:
        if fresh:
            self.wait_fresh(timeout)
        dropped = ", ".join(self.replica_labels)
        promql = (
            f"sum without ({dropped}) (label_replace("
            f'{{{self.selector}, __name__!~"up|scrape_.+"}}, '
            f'"{_NAME_LABEL}", "$1", "__name__", "(.+)"))'
        )
        out = []
        for labels, value in self.query(promql, timeout):
            name = labels.pop(_NAME_LABEL, None)
            if name is not None:
                out.append((name, labels, value))
        return out


def _selectors(configuration: Configuration, secrets: Secrets) -> dict:
    raw = lookup("prometheus_selectors", configuration, secrets, required=False) or {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, dict):
        raise ActivityFailed(
            "prometheus_selectors must map a service to its PromQL label matcher, e.g. "
            '{"api": "job=\\"api\\""} (an object, or that object as JSON)'
        )
    return raw


def metrics_source(
    service: str,
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> ScrapeSource | PrometheusSource:
    """Where `service`'s metrics are read: an explicit `url` is always scraped; otherwise
    `metrics_source` (configuration key, or env CHAOSMESSAGING_METRICS_SOURCE) chooses `scrape`
    (the service's own `/metrics`, the default) or `prometheus` (PromQL at `prometheus_url`,
    summed over the service's replicas). Every address passes the target allow-list first."""
    mode = str(lookup("metrics_source", configuration, secrets)).strip().lower()
    if mode not in SOURCES:
        raise ActivityFailed(f"metrics_source {mode!r} is not one of {list(SOURCES)}")
    if url or mode == "scrape":
        return ScrapeSource(service_url(service, url, "/metrics", configuration, secrets))
    base = targets.address("prometheus_url", configuration, secrets, scheme="http")
    selector = str(_selectors(configuration, secrets).get(service, f'job="{service}"')).strip()
    selector = selector.removeprefix("{").removesuffix("}")
    replica_labels = lookup("prometheus_replica_labels", configuration, secrets, required=False)
    if isinstance(replica_labels, str):
        replica_labels = [s.strip() for s in replica_labels.split(",") if s.strip()]
    replica_labels = tuple(replica_labels or REPLICA_LABELS)
    if not all(_LABEL.fullmatch(label) for label in replica_labels):
        raise ActivityFailed(
            f"prometheus_replica_labels {list(replica_labels)} must be Prometheus label names"
        )
    fresh = lookup("prometheus_fresh_within_s", configuration, secrets, required=False)
    return PrometheusSource(base, selector, replica_labels, float(fresh or 30.0))

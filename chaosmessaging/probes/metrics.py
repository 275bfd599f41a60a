"""Prometheus probes: read one metric of a service, from its `/metrics` text exposition or, with
`metrics_source: prometheus`, from a Prometheus server summed over the service's replicas
(`chaosmessaging.clients.prometheus.metrics_source`; the probes below never know which).

Parsing uses prometheus-client's own text parser rather than regexes. `name` is a sample
name as it appears in the exposition (`messaging_consumer_delivered_total`,
`messaging_message_size_bytes_count`, `..._bucket` with `{"le": "1024.0"}`) or, for a
counter, its family name without `_total`. Every sample whose labels include `labels` is
summed, so `ws_close_total` without labels is the total over all codes.
"""

import difflib

import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.clients.prometheus import candidates, metrics_source, select
from chaosmessaging.platform.metrics import maps_metrics, metric_name
from chaosmessaging.verdicts import Verdict, argument, judges_method, logged, verdict

__all__ = [
    "counter_grew_at_most",
    "counter_ratio_at_least",
    "histogram_quantile_within",
    "metric_increased",
    "metric_sum",
    "metric_value",
    "snapshot_metric",
    "snapshot_metrics",
    "wait_for_counter_growth",
]

_METRIC = runs.Snapshots(
    "metric", "no snapshot {label!r} of {name}: add snapshot_metric(label={label!r}) to the method"
)
#: every sample of a service, by `snapshot_metrics` (also read by `authorization` and `cache`)
METRICS_SNAPSHOTS = runs.Snapshots(
    "metrics",
    "no snapshot {label!r}: add snapshot_metrics(label={label!r}) to the method before the load",
)


def metric_value(
    name: str,
    labels: dict = None,
    url: str = None,
    service: str = "api",
    default: float = None,
    timeout: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """
    Value of the metric `name` read from the service's `/metrics` (or `url`; or Prometheus with
    `metrics_source: prometheus`), summed over the samples whose labels include `labels` (and
    over replicas). A missing metric raises an error naming the closest metric names, unless
    `default` is given (then `default` is returned).
    """
    name = metric_name(name, configuration, secrets)
    source = metrics_source(service, url, configuration, secrets)
    samples = source.samples(timeout)
    value = select(samples, name, labels or {})
    if value is not None:
        return value
    if default is not None:
        return float(default)
    names = sorted({s_name for s_name, _, _ in samples})
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    with_name = [s_labels for s_name, s_labels, _ in samples if s_name in candidates(name)]
    detail = (
        f"labels {labels} match none of {with_name[:5]}"
        if with_name
        else f"closest names: {close or 'none'}"
    )
    raise ActivityFailed(
        f"metric '{name}' not found at {source.where} ({detail}); pass "
        "`default` if its absence is expected"
    )


def snapshot_metric(
    label: str,
    name: str,
    labels: dict = None,
    url: str = None,
    service: str = "api",
    default: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """
    Read `metric_value(name, labels)` now and record it in the run's facts under `label`, so a
    later `metric_increased(since=label, ...)` can judge what the method changed.
    """
    value = metric_value(
        name, labels, url, service, default, configuration=configuration, secrets=secrets
    )
    _METRIC.record(label, {"name": name, "labels": labels or {}, "value": value}, configuration)
    return value


@maps_metrics
@judges_method()
def metric_increased(
    since: str,
    name: str,
    labels: dict = None,
    url: str = None,
    service: str = "api",
    min_increase: float = 1.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: the metric grew by at least `min_increase` since the snapshot `since` (see
    `snapshot_metric`), e.g. proof that a fault made the dispatcher park rows (figures:
    `before`, `now`, `grew`). Holds before the method ran; after it, a missing snapshot fails.
    """
    snapshot = _METRIC.get(since, configuration)
    if snapshot is None:
        return verdict(
            False, _METRIC.missing_reason(since, name=name), before=None, now=None, grew=None
        )
    now = metric_value(
        name, labels, url, service, default=0.0, configuration=configuration, secrets=secrets
    )
    grew = now - float(snapshot["value"])
    reason = f"{name}{labels or ''} grew by {grew:g} since {since} (need {float(min_increase):g})"
    return logged(
        verdict(
            grew >= float(min_increase),
            reason,
            before=float(snapshot["value"]),
            now=now,
            grew=grew,
        )
    )


def metric_sum(
    name: str,
    labels: dict = None,
    urls: list = None,
    services: list = None,
    default: float = 0.0,
    timeout: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """
    Sum of `metric_value(name, labels)` over several endpoints: the `/metrics` URLs in `urls`
    and/or the named `services` (default: api, dispatcher and consumer when `urls` is
    empty). A service that lacks the metric counts as `default`; an unreachable one is an error.
    """
    targets = [(None, u) for u in urls or []]
    if services or not targets:
        targets += [(s, None) for s in services or ["api", "dispatcher", "consumer"]]
    return float(
        sum(
            metric_value(
                name,
                labels,
                target_url,
                service=service or "api",
                default=default,
                timeout=timeout,
                configuration=configuration,
                secrets=secrets,
            )
            for service, target_url in targets
        )
    )


def snapshot_metrics(
    label: str,
    service: str = "api",
    prefix: str = "",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Record every sample of the service's `/metrics` (or `url`) whose name starts with `prefix`
    in the run's facts under `label`, so `histogram_quantile_within` and
    `counter_ratio_at_least` (with `since=label`) judge only what happened after it. Returns
    ``{"label", "samples"}`` (how many samples were recorded).
    """
    source = metrics_source(service, url, configuration, secrets)
    kept = [
        [name, labels, value]
        for name, labels, value in source.samples(5.0)
        if name.startswith(prefix)
    ]
    METRICS_SNAPSHOTS.record(label, {"url": source.where, "samples": kept}, configuration)
    return {"label": label, "samples": len(kept)}


def _samples_since(label: str, configuration: Configuration) -> list | None:
    """The samples of the snapshot `label` (`snapshot_metrics`), or None when it is missing."""
    fact = METRICS_SNAPSHOTS.get(label, configuration)
    return None if fact is None else [(n, dict(lb), float(v)) for n, lb, v in fact["samples"]]


def _missing_snapshot(label: str, **figures) -> Verdict:
    return verdict(False, METRICS_SNAPSHOTS.missing_reason(label), **figures)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / width if width else 1.0
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@maps_metrics
@judges_method(
    value=None,
    observations=0,
    limit=argument("limit", float),
    quantile=argument("quantile", float),
)
def histogram_quantile_within(
    since: str,
    name: str,
    limit: float,
    quantile: float = 0.95,
    service: str = "api",
    labels: dict = None,
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: the `quantile` (default p95) of histogram `name` over the observations made since
    the snapshot `since` (see `snapshot_metrics`) is at most `limit` (in the histogram's unit,
    e.g. seconds for auth_token_generation_latency). Computed like Prometheus'
    histogram_quantile from the bucket counts' growth, so its precision is the bucket layout's.
    Figures: `value`, `observations`, `limit`, `quantile`. No observation since the snapshot
    fails. Holds before the method ran.
    """
    limit, quantile = float(limit), float(quantile)
    before = _samples_since(since, configuration)
    if before is None:
        return _missing_snapshot(since, value=None, observations=0, limit=limit, quantile=quantile)
    source = metrics_source(service, url, configuration, secrets)
    now = source.samples(5.0)
    wanted = {k: str(v) for k, v in (labels or {}).items()}

    def buckets(samples: list) -> dict[float, float]:
        out: dict[float, float] = {}
        for s_name, s_labels, value in samples:
            if s_name == f"{name}_bucket" and all(s_labels.get(k) == v for k, v in wanted.items()):
                bound = float(s_labels["le"])
                out[bound] = out.get(bound, 0.0) + value
        return out

    after, start = buckets(now), buckets(before)
    if not after:
        return verdict(
            False,
            f"histogram {name} not found at {source.where}",
            value=None,
            observations=0,
            limit=limit,
            quantile=quantile,
        )
    grown = sorted((b, c - start.get(b, 0.0)) for b, c in after.items())
    observations = grown[-1][1]
    value = _quantile(grown, quantile)
    if value is None:
        return verdict(
            False,
            f"no {name} observation since {since!r}: the load did not reach {service}",
            value=None,
            observations=0,
            limit=limit,
            quantile=quantile,
        )
    reason = (
        f"{name} p{quantile * 100:g} since {since!r}: {value:.4g} over "
        f"{observations:g} observations (limit {limit:g})"
    )
    return logged(
        verdict(
            value <= limit,
            reason,
            value=value,
            observations=observations,
            limit=limit,
            quantile=quantile,
        )
    )


@maps_metrics
@judges_method(
    ratio=None,
    numerator_grew=None,
    denominator_grew=None,
    min_ratio=argument("min_ratio", float),
)
def counter_ratio_at_least(
    since: str,
    numerator: str,
    denominator: str,
    min_ratio: float,
    service: str = "api",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: growth of counter `numerator` divided by growth of counter `denominator` since
    the snapshot `since` is at least `min_ratio`, e.g. auth_login_success_total /
    auth_login_attempts_total >= 0.999. Figures: `ratio`, `numerator_grew`,
    `denominator_grew`, `min_ratio`. A denominator that did not grow fails. Holds before the
    method ran.
    """
    min_ratio = float(min_ratio)
    figures = {
        "ratio": None,
        "numerator_grew": None,
        "denominator_grew": None,
        "min_ratio": min_ratio,
    }
    before = _samples_since(since, configuration)
    if before is None:
        return _missing_snapshot(since, **figures)
    source = metrics_source(service, url, configuration, secrets)
    now = source.samples(5.0)
    grew = {}
    for key, metric in (("numerator_grew", numerator), ("denominator_grew", denominator)):
        current = select(now, metric, {})
        if current is None:
            return verdict(False, f"counter {metric} not found at {source.where}", **figures)
        grew[key] = current - (select(before, metric, {}) or 0.0)
    figures.update(grew)
    if grew["denominator_grew"] <= 0:
        return verdict(
            False, f"{denominator} did not grow since {since!r}: nothing to judge", **figures
        )
    ratio = grew["numerator_grew"] / grew["denominator_grew"]
    figures["ratio"] = ratio
    reason = (
        f"{numerator} / {denominator} since {since!r}: {grew['numerator_grew']:g} / "
        f"{grew['denominator_grew']:g} = {ratio:.5f} (need >= {min_ratio:g})"
    )
    return logged(verdict(ratio >= min_ratio, reason, **figures))


@maps_metrics
@judges_method(before=None, now=None, grew=None, max_increase=argument("max_increase", float))
def counter_grew_at_most(
    since: str,
    name: str,
    max_increase: float = 0.0,
    labels: dict = None,
    service: str = "api",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: counter `name` (samples whose labels include `labels`, summed) grew by at most
    `max_increase` since the snapshot `since` (`snapshot_metrics`), e.g. ws_close_total
    {"code": "1002"} stayed at 0 growth, ws_overload_total did not grow. A counter absent from
    both scrapes counts as 0 (never incremented). Figures: `before`, `now`, `grew`,
    `max_increase`. Holds before the method ran.
    """
    figures = {"before": None, "now": None, "grew": None, "max_increase": float(max_increase)}
    before = _samples_since(since, configuration)
    if before is None:
        return _missing_snapshot(since, **figures)
    source = metrics_source(service, url, configuration, secrets)
    now = select(source.samples(5.0), name, labels or {}) or 0.0
    then = select(before, name, labels or {}) or 0.0
    grew = now - then
    figures.update(before=then, now=now, grew=grew)
    reason = f"{name}{labels or ''} grew by {grew:g} since {since!r} (max {float(max_increase):g})"
    return logged(verdict(grew <= float(max_increase), reason, **figures))


def wait_for_counter_growth(
    since: str,
    name: str,
    min_increase: float,
    service: str = "api",
    timeout_s: float = 60.0,
    labels: dict = None,
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Wait until counter `name` on `service` grew by at least `min_increase` since the snapshot
    `since` (`snapshot_metrics`), e.g. until a load's messages really flow through the consumer
    before a fault that must strike work in flight. Returns `{"grew", "waited_s"}`; raises
    `ActivityFailed` after `timeout_s` (the load is not flowing).
    """
    before = _samples_since(since, configuration)
    if before is None:
        raise ActivityFailed(f"no snapshot {since!r}: add snapshot_metrics(label={since!r}) first")
    name = metric_name(name, configuration, secrets)
    then = select(before, name, labels or {}) or 0.0
    source = metrics_source(service, url, configuration, secrets)
    started = time.monotonic()
    while True:
        grew = (select(source.samples(5.0), name, labels or {}) or 0.0) - then
        waited = round(time.monotonic() - started, 2)
        if grew >= float(min_increase):
            logger.info(f"{name} grew by {grew:g} since {since!r} after {waited:g}s")
            return {"grew": grew, "waited_s": waited}
        if waited > float(timeout_s):
            raise ActivityFailed(
                f"{name} on {service} grew by only {grew:g} since {since!r} in {timeout_s:g}s "
                f"(need {min_increase:g}): is the load running?"
            )
        time.sleep(0.2)

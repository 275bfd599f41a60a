"""Storage-layer probes and verdicts (plan tests 7 and 10): circuit breakers, the PostgreSQL pool,
errors by type, retries and the cache hit ratio, read from a service's /metrics.

Metric names are the reference stack's (``storage_circuit_breaker_transitions{adapter,state}``,
``storage_circuit_breaker_state{adapter}`` 0 closed / 1 open / 2 half_open,
``storage_errors_total{adapter,type}``, ``storage_retries_total{adapter}``,
``storage_cache_hits_total`` / ``_misses_total``, ``storage_cache_hit_ratio``,
``storage_pool_max`` / ``_size`` / ``_in_use`` / ``_waiting``). Verdicts about what the method
changed compare with `snapshot_storage` taken at the method's start, and hold before the method.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging import runs
from chaosmessaging.clients.prometheus import metrics_source
from chaosmessaging.util import home_of, poll
from chaosmessaging.verdicts import Verdict, judges_method, verdict

__all__ = [
    "breaker_state",
    "pool_usage",
    "storage_errors",
    "snapshot_storage",
    "breaker_opened",
    "breaker_never_opened",
    "breaker_closed_again",
    "errors_grew",
    "retries_within",
    "cache_hit_ratio_above",
    "pool_released",
    "pool_exhaustion_observed",
    "migration_within",
]

STATE_NAMES = {0: "closed", 1: "open", 2: "half_open"}


def _storage_samples(service: str, configuration: Configuration, secrets: Secrets) -> list:
    source = metrics_source(service, None, configuration, secrets)
    return [s for s in source.samples(5.0) if s[0].startswith("storage_")]


def _sum(samples: list, name: str, **labels) -> float:
    return float(
        sum(
            v
            for n, lab, v in samples
            if n == name and all(lab.get(k) == str(x) for k, x in labels.items())
        )
    )


def _by(samples: list, name: str, key: str, **labels) -> dict:
    out: dict[str, float] = {}
    for n, lab, v in samples:
        if n == name and all(lab.get(k) == str(x) for k, x in labels.items()):
            out[lab.get(key, "")] = out.get(lab.get(key, ""), 0.0) + v
    return out


def breaker_state(
    adapter: str = "postgres",
    service: str = "api",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    The circuit breaker of `adapter` (postgres, stream, cache) in `service`: `state` (closed,
    open, half_open) and `transitions` (how often it entered each state since the process
    started).
    """
    samples = _storage_samples(service, configuration, secrets)
    code = int(_sum(samples, "storage_circuit_breaker_state", adapter=adapter))
    return {
        "adapter": adapter,
        "state": STATE_NAMES.get(code, str(code)),
        "transitions": _by(
            samples, "storage_circuit_breaker_transitions_total", "state", adapter=adapter
        ),
    }


def pool_usage(
    service: str = "api", configuration: Configuration = None, secrets: Secrets = None
) -> dict:
    """
    The PostgreSQL pool of `service` now: `max`, `size` (open), `in_use`, `waiting` (requests
    waiting for a connection) and `acquire_timeouts` (since start).
    """
    s = _storage_samples(service, configuration, secrets)
    return {
        "max": _sum(s, "storage_pool_max"),
        "size": _sum(s, "storage_pool_size"),
        "in_use": _sum(s, "storage_pool_in_use"),
        "waiting": _sum(s, "storage_pool_waiting"),
        "acquire_timeouts": _sum(s, "storage_pool_acquire_timeouts_total"),
    }


def storage_errors(
    adapter: str = None,
    service: str = "api",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Failed storage operations of `service` by error type (of one `adapter`, or all)."""
    labels = {"adapter": adapter} if adapter else {}
    return _by(
        _storage_samples(service, configuration, secrets), "storage_errors_total", "type", **labels
    )


def _figures(samples: list) -> dict:
    return {
        "transitions": {
            f"{lab.get('adapter')}:{lab.get('state')}": v
            for n, lab, v in samples
            if n == "storage_circuit_breaker_transitions_total"
        },
        "errors": {
            f"{lab.get('adapter')}:{lab.get('type')}": v
            for n, lab, v in samples
            if n == "storage_errors_total"
        },
        "retries": _sum(samples, "storage_retries_total"),
        "cache_hits": _sum(samples, "storage_cache_hits_total"),
        "cache_misses": _sum(samples, "storage_cache_misses_total"),
    }


_STORAGE = runs.Snapshots(
    "storage",
    "no storage snapshot {label!r}: add snapshot_storage(label={label!r}) at the start of the "
    "method",
)


def snapshot_storage(
    label: str = "storage",
    service: str = "api",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Record `service`'s storage counters now (breaker transitions, errors by type, retries,
    cache hits and misses) under `label`, for the verdicts that judge what the method changed.
    """
    figures = _figures(_storage_samples(service, configuration, secrets))
    _STORAGE.record(label, {"service": service, **figures}, configuration)
    return figures


def _delta(
    since: str, configuration: Configuration, secrets: Secrets
) -> tuple[dict | None, dict | None, str | None]:
    before = _STORAGE.get(since, configuration)
    if before is None:
        return None, None, _STORAGE.missing_reason(since)
    now = _figures(_storage_samples(before["service"], configuration, secrets))
    delta = {
        "transitions": {
            k: v - before["transitions"].get(k, 0.0) for k, v in now["transitions"].items()
        },
        "errors": {k: v - before["errors"].get(k, 0.0) for k, v in now["errors"].items()},
        **{k: now[k] - before[k] for k in ("retries", "cache_hits", "cache_misses")},
    }
    return delta, now, None


@platform_applies
@judges_method()
def breaker_opened(
    since: str = "storage",
    adapter: str = "postgres",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """Verdict: `adapter`'s breaker opened at least once since the snapshot `since` (T10)."""
    delta, _, missing = _delta(since, configuration, secrets)
    if missing:
        return verdict(False, missing)
    opened = delta["transitions"].get(f"{adapter}:open", 0.0)
    return verdict(
        opened > 0,
        f"the {adapter} breaker opened {opened:g} time(s) since {since}",
        opened=opened,
        transitions=delta["transitions"],
    )


@platform_applies
@judges_method()
def breaker_never_opened(
    since: str = "storage",
    adapters: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """Verdict: no breaker (of `adapters`, default all) opened since the snapshot (T7)."""
    delta, _, missing = _delta(since, configuration, secrets)
    if missing:
        return verdict(False, missing)
    opened = {
        k.split(":")[0]: v
        for k, v in delta["transitions"].items()
        if k.endswith(":open") and (not adapters or k.split(":")[0] in adapters)
    }
    bad = {k: v for k, v in opened.items() if v > 0}
    reason = (
        f"breakers opened since {since}: {bad}"
        if bad
        else f"no breaker opened since {since} ({', '.join(sorted(opened))})"
    )
    return verdict(not bad, reason, opened=opened)


@platform_applies
@judges_method()
def breaker_closed_again(
    since: str = "storage",
    adapter: str = "postgres",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T10 recovery): `adapter`'s breaker opened since the snapshot, later closed again
    (a closed transition was counted) and is closed now. Purgatory half-opens on the next call
    after the reset time, so the load must go on after the fault for the breaker to close.
    """
    delta, _, missing = _delta(since, configuration, secrets)
    if missing:
        return verdict(False, missing)
    state = breaker_state(
        adapter,
        _STORAGE.get(since, configuration)["service"],
        configuration,
        secrets,
    )["state"]
    opened = delta["transitions"].get(f"{adapter}:open", 0.0)
    closed = delta["transitions"].get(f"{adapter}:closed", 0.0)
    ok = opened > 0 and closed > 0 and state == "closed"
    if opened == 0:
        reason = f"the {adapter} breaker never opened since {since}, so it cannot have recovered"
    elif not ok:
        reason = (
            f"the {adapter} breaker opened {opened:g} time(s) but is {state} now "
            f"(closed {closed:g} time(s)): it did not recover after the load dropped"
        )
    else:
        reason = f"the {adapter} breaker opened {opened:g}x and closed again {closed:g}x"
    return verdict(
        ok,
        reason,
        state=state,
        opened=opened,
        closed=closed,
        half_opened=delta["transitions"].get(f"{adapter}:half_open", 0.0),
    )


@platform_applies
@judges_method()
def errors_grew(
    since: str = "storage",
    type: str = "TimeoutError",
    adapter: str = "postgres",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """Verdict: `storage_errors_total{adapter,type}` grew since the snapshot (T10: timeouts)."""
    delta, _, missing = _delta(since, configuration, secrets)
    if missing:
        return verdict(False, missing)
    grew = delta["errors"].get(f"{adapter}:{type}", 0.0)
    return verdict(
        grew > 0,
        f"{grew:g} {adapter} {type} error(s) since {since}",
        grew=grew,
        errors=delta["errors"],
    )


def _load_requests(load: str, configuration: Configuration) -> float | None:
    info = runs.fact(f"load:{load}", home=home_of(configuration)) or {}
    path = info.get("summary_path")
    if not path or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text())["metrics"].get("http_reqs", {}).get("count")


@platform_applies
@judges_method()
def retries_within(
    max_fraction: float,
    since: str = "storage",
    load: str = "load",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T7): storage retries since the snapshot (all adapters) are below `max_fraction`
    of the requests the load `load` sent (from its k6 summary).
    """
    delta, _, missing = _delta(since, configuration, secrets)
    requests = _load_requests(load, configuration)
    if missing or not requests:
        return verdict(False, missing or f"no k6 summary with requests for load {load!r}")
    fraction = delta["retries"] / requests
    return verdict(
        fraction < float(max_fraction),
        f"{delta['retries']:g} retries for {requests:g} requests = {fraction:.4%} "
        f"(limit < {float(max_fraction):.2%})",
        retries=delta["retries"],
        requests=requests,
        fraction=fraction,
    )


@platform_applies
@judges_method()
def cache_hit_ratio_above(
    min_ratio: float,
    since: str = "storage",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T7): cache hits / (hits + misses) during the method (counter deltas since the
    snapshot) is above `min_ratio`; the process-wide `storage_cache_hit_ratio` gauge is reported
    beside it.
    """
    delta, _, missing = _delta(since, configuration, secrets)
    if missing:
        return verdict(False, missing)
    reads = delta["cache_hits"] + delta["cache_misses"]
    if reads == 0:
        return verdict(False, f"no cache read since {since}: did the load read the cache?")
    ratio = delta["cache_hits"] / reads
    service = _STORAGE.get(since, configuration)["service"]
    gauge = _sum(_storage_samples(service, configuration, secrets), "storage_cache_hit_ratio")
    return verdict(
        ratio > float(min_ratio),
        f"cache hit ratio {ratio:.3f} over {reads:g} reads (limit > {float(min_ratio):g})",
        ratio=ratio,
        reads=reads,
        storage_cache_hit_ratio=gauge,
    )


@platform_applies
@judges_method()
def pool_released(
    within_s: float = 15.0,
    service: str = "api",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: once the load is over, `service`'s pool gives every connection back (in use 0 and
    nobody waiting) within `within_s` seconds. A connection leaked on an error path stays in
    use for ever and fails this.
    """
    started = time.monotonic()
    last: dict = {}

    def drained() -> bool:
        last.update(pool_usage(service, configuration, secrets))
        return last["in_use"] == 0 and last["waiting"] == 0

    ok = poll(drained, float(within_s), 0.5)
    took = round(time.monotonic() - started, 2)
    reason = (
        f"pool drained: 0 of {last.get('max', 0):g} in use after {took:g}s"
        if ok
        else f"{last.get('in_use', 0):g} of {last.get('max', 0):g} pooled connections still in "
        f"use and {last.get('waiting', 0):g} waiting {float(within_s):g}s after the load: "
        "a connection leaks"
    )
    (logger.info if ok else logger.warning)(reason)
    return verdict(ok, reason, **last, waited_s=took)


@platform_applies
@judges_method()
def pool_exhaustion_observed(
    label: str = "pool_exhaustion",
    min_saturated_s: float = 1.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict (T10): `exhaust_pool(label=...)` really exhausted the pool: in use == max with
    requests waiting was observed, for at least `min_saturated_s` seconds.
    """
    seen = runs.fact(label, home=home_of(configuration))
    if not seen:
        return verdict(False, f"no pool exhaustion recorded under {label!r}")
    ok = seen["observed"] and seen["saturated_s"] >= float(min_saturated_s)
    return verdict(
        ok,
        f"pool {seen['max_in_use']:g}/{seen['pool_max']:g} in use, up to "
        f"{seen['max_waiting']:g} waiting, saturated {seen['saturated_s']:g}s "
        f"(need {float(min_saturated_s):g}s)",
        **{
            k: seen[k]
            for k in (
                "max_in_use",
                "pool_max",
                "max_waiting",
                "saturated_s",
                "first_saturated_after_s",
            )
        },
    )


@platform_applies
@judges_method()
def migration_within(
    limit_s: float,
    label: str = "migration",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """Verdict (T13): the migration recorded under `label` succeeded within `limit_s` seconds."""
    seen = runs.fact(label, home=home_of(configuration))
    if not seen:
        return verdict(False, f"no migration recorded under {label!r}")
    ok = seen["ok"] and seen["seconds"] < float(limit_s)
    reason = (
        f"migration {seen['migration']} took {seen['seconds']:g}s (limit < "
        f"{float(limit_s):g}s)" + ("" if seen["ok"] else f" and failed: {seen['error']}")
    )
    return verdict(ok, reason, seconds=seen["seconds"], migration=seen["migration"])

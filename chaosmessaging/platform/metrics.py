"""Metric names by role: the platform file's `metrics` map, applied where probes read metrics.

A *role* is a metric name of the reference platform (the plan's names, the keys of
``platforms/reference.yaml``'s `metrics`). An experiment names roles; the platform file maps
each to the platform's own metric, or to null when it has none: a verdict on it is then "n/a"
(`verdicts.not_applicable`), never passed or failed. A name that is not a role is the platform's
own and is used as it is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from functools import lru_cache

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging.platform.loader import PlatformError, load_platform, read_document
from chaosmessaging.platform.schema import Platform

__all__ = ["ROLE_ARGUMENTS", "MetricNotApplicable", "metric_name", "maps_metrics", "roles"]

# the arguments of metric probes that name a metric
ROLE_ARGUMENTS = ("name", "numerator", "denominator", "metric")


class MetricNotApplicable(ActivityFailed):
    """The platform file maps a metric role to null (or leaves it out)."""


@lru_cache(maxsize=1)
def roles() -> frozenset[str]:
    from chaosmessaging.resources import bundled

    return frozenset(read_document(bundled("platforms") / "reference.yaml").get("metrics") or {})


def resolve(platform: Platform, name: str) -> str | None:
    """The platform's metric for `name` (a role is mapped; any other name is its own)."""
    if name not in roles():
        return name
    return platform.metrics.get(name)


def why_not(platform: Platform, name: str) -> str:
    return (
        f"the platform {platform.name!r} exposes no metric for '{name}' "
        f"(metrics.{name} in its platform file)"
    )


def metric_name(name: str, configuration: Configuration = None, secrets: Secrets = None) -> str:
    """The run's platform's metric for `name`; raises `MetricNotApplicable` when it has none."""
    if name not in roles():
        return name
    try:
        platform = load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None
    mapped = resolve(platform, name)
    if mapped is None:
        raise MetricNotApplicable(why_not(platform, name))
    return mapped


def maps_metrics(func: Callable) -> Callable:
    """For a verdict probe: its metric arguments (`ROLE_ARGUMENTS`) go through `metric_name`;
    a metric the platform does not have makes the verdict "n/a". The signature (and so
    `chaos discover` and the validation control) is the probe's own."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from chaosmessaging.verdicts import not_applicable

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        configuration = bound.arguments.get("configuration")
        secrets = bound.arguments.get("secrets")
        for arg in ROLE_ARGUMENTS:
            value = bound.arguments.get(arg)
            if isinstance(value, str):
                try:
                    bound.arguments[arg] = metric_name(value, configuration, secrets)
                except MetricNotApplicable as exc:
                    return not_applicable(str(exc))
        return func(*bound.args, **bound.kwargs)

    return wrapper

"""The one shape every verdict probe answers, the rule for verdicts before the method, and the
one way a verdict's outcome is logged.

A verdict probe judges a criterion of the plan and returns a `Verdict`: `ok` (the criterion held),
`reason` (one sentence a person reads in the journal: why it held or what breached it) and the
figures behind it. Every tolerance in an experiment is therefore the same::

    "tolerance": {"type": "jsonpath", "path": "$.ok", "expect": true}

Record now, judge later: the method records what a verdict needs (`chaosmessaging.runs.Snapshots`:
a labelled snapshot of the run, read back with an error naming a missing label), and the
hypothesis judges it. Chaos Toolkit probes the steady-state hypothesis before the method and after
it. Before the method (no `mark(label="method")` yet in this run) there is no evidence to judge, so
a verdict about the method's effect holds trivially. A probe declares that it judges the method's
effect with `@judges_method(**figures)`: before the method it answers the holding verdict (with
`"phase": "before"` and those figures) without running; once the method started it runs, and
missing evidence is a failure. `held_before_method` is the same rule for a probe that judges
whatever evidence exists and holds only when there is none before the method.

`logged(result)` logs a verdict's outcome ("<reason> -> ok" or "... -> BREACHED") and returns it.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, TypeVar

from chaoslib.types import Configuration

from logzero import logger

from chaosmessaging import runs
from chaosmessaging.util import home_of

__all__ = [
    "Verdict",
    "verdict",
    "judges_method",
    "argument",
    "held_before_method",
    "logged",
    "not_applicable",
    "NOT_APPLICABLE",
]

NOT_APPLICABLE = "n/a"


class Verdict(TypedDict):
    """`ok` and `reason`, then the probe's own figures (documented by each probe)."""

    ok: bool
    reason: str
    phase: NotRequired[str]


def verdict(ok: bool, reason: str, **figures: Any) -> Verdict:
    """A verdict: `{"ok": ok, "reason": reason, **figures}` (`ok` coerced to a real bool)."""
    return {"ok": bool(ok), "reason": str(reason), **figures}  # type: ignore[typeddict-item]


def not_applicable(why: str, **figures: Any) -> Verdict:
    """A criterion that does not apply to this platform (its platform file says it has no such
    thing): it holds (the run is not failed by it) and says so, ``"applies": false``, so the
    journal, the nightly suite and the dashboard report it as "n/a: <why>", never as passed."""
    return verdict(True, f"{NOT_APPLICABLE}: {why}", applies=False, **figures)


_HOLDS_BEFORE = "holds before the method starts: nothing to judge yet"


def held_before_method(configuration: Configuration = None, **figures: Any) -> Verdict | None:
    """The trivially holding verdict while the method has not started, else None.

    A verdict about the method's effect as a whole declares it with `@judges_method`; this call
    is for a probe that judges whatever evidence there is and holds only when, before the
    method, it finds none::

        if not evidence and (held := held_before_method(configuration)):
            return held
    """
    if runs.method_started(home_of(configuration)):
        return None
    return verdict(True, _HOLDS_BEFORE, phase="before", **figures)


@dataclass(frozen=True)
class _Argument:
    name: str
    convert: Callable[[Any], Any] | None

    def value(self, arguments: dict[str, Any]) -> Any:
        value = arguments[self.name]
        return self.convert(value) if self.convert else value


def argument(name: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """A figure of `judges_method` taken from the probe's own argument `name` (its default when
    not given), passed through `convert` (e.g. `float`)."""
    return _Argument(name, convert)


F = TypeVar("F", bound=Callable[..., Verdict])


def judges_method(
    *checks: Callable[[dict[str, Any]], Verdict | None], **figures: Any
) -> Callable[[F], F]:
    """Declare a verdict probe as judging the method's effect: before the method started it is
    not run and the verdict holds (`"phase": "before"`) with `figures`, each a value (copied
    for every call) or an `argument(...)` of the probe. Each of `checks` is first given the
    probe's arguments (a dict, defaults applied), before the method and after it: it raises on
    arguments no run could judge, or returns the verdict to answer instead (else None).

    The probe's name, docstring and signature are kept (`chaos discover`, the validation
    control). Put it below `platform_applies` and `maps_metrics`, so an "n/a" is still said
    before the method::

        @platform_applies
        @judges_method(count=None, at_most=argument("at_most", float), loads={})
        def k6_count_at_most(metric, at_most=0, ..., configuration=None, secrets=None):
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        named = [f.name for f in figures.values() if isinstance(f, _Argument)]
        unknown = [n for n in [*named, "configuration"] if n not in signature.parameters]
        if unknown:
            raise TypeError(f"{func.__name__} has no argument {unknown}")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Verdict:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            for check in checks:
                if (answer := check(arguments)) is not None:
                    return answer
            values = {
                name: f.value(arguments) if isinstance(f, _Argument) else f
                for name, f in figures.items()
            }
            if runs.method_started(home_of(arguments["configuration"])):
                return func(*args, **kwargs)
            return verdict(True, _HOLDS_BEFORE, phase="before", **copy.deepcopy(values))

        wrapper.judges_method = True  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def logged(result: Verdict, subject: str = None) -> Verdict:
    """Log a verdict's outcome, "[<subject>: ]<reason> -> ok" or "... -> BREACHED", at info
    level, and return it unchanged."""
    prefix = f"{subject}: " if subject else ""
    logger.info(f"{prefix}{result['reason']} -> {'ok' if result['ok'] else 'BREACHED'}")
    return result

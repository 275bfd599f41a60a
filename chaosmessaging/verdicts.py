"""The one shape every verdict probe answers, and the rule for verdicts before the method.

A verdict probe judges a criterion of the plan and returns a `Verdict`: `ok` (the criterion held),
`reason` (one sentence a person reads in the journal: why it held or what breached it) and the
figures behind it. Every tolerance in an experiment is therefore the same::

    "tolerance": {"type": "jsonpath", "path": "$.ok", "expect": true}

Chaos Toolkit probes the steady-state hypothesis before the method and after it. Before the method
(no `mark(label="method")` yet in this run) there is no evidence to judge, so a verdict about the
method's effect holds trivially: `held_before_method` returns that verdict, and None once the method
started (the probe must then find its evidence, and missing evidence is a failure).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from chaoslib.types import Configuration

from chaosmessaging import runs
from chaosmessaging.util import home_of

__all__ = ["Verdict", "verdict", "held_before_method", "not_applicable", "NOT_APPLICABLE"]

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


def held_before_method(configuration: Configuration = None, **figures: Any) -> Verdict | None:
    """The trivially holding verdict while the method has not started, else None.

    Usage at the top of a verdict probe::

        if held := held_before_method(configuration):
            return held
    """
    if runs.method_started(home_of(configuration)):
        return None
    return verdict(
        True, "holds before the method starts: nothing to judge yet", phase="before", **figures
    )

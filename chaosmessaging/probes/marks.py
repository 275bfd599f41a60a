"""The run's own instants: `mark` records one ("method" as the method's first step, a fault's
removal) in the run's facts, for the verdicts that judge the method's effect
(`verdicts.judges_method`) and the recovery times measured from an instant
(`probes.recovery.wait_for_recovery`, `recovery_within`)."""

from __future__ import annotations

import time

from chaoslib.types import Configuration, Secrets

from chaosmessaging import runs

__all__ = ["mark"]


def mark(
    label: str = "method", configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Record the current time under `label` in the run's facts and return it (epoch seconds).

    Put `mark(label="method")` first in a method so the hypothesis knows the method ran, and a
    mark just before removing a fault so recovery is timed from that instant."""
    return runs.MARKS.record(label, time.time(), configuration)

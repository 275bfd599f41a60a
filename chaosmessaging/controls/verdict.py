"""Control: a run whose system was not in its steady state to begin with is a failure.

Chaos Toolkit ends such a run with status "completed" and exit code 0 ("the method was not
played"), so a nightly job would report a broken platform as green. With this control the journal
says "failed" (and `chaos run` exits 1) when the hypothesis did not hold before the method, and
names the probe that broke it.
"""

from typing import Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets
from logzero import logger

__all__ = ["after_experiment_control"]


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Mark the journal failed when the steady state did not hold before the method."""
    before = (state or {}).get("steady_states", {}).get("before")
    if not before or before.get("steady_state_met", True):
        return
    broken = [
        p["activity"]["name"]
        for p in before.get("probes", [])
        if not p.get("tolerance_met", True) or p.get("status") != "succeeded"
    ]
    state["status"] = "failed"
    state["chaosmessaging_verdict"] = {
        "failed_before_method": True,
        "probes": broken,
        "reason": "the system was not in its steady state before the method, so nothing was "
        "tested; fix the system (or the hypothesis) and run again",
    }
    logger.error(
        f"steady state did not hold before the method ({', '.join(broken)}): marking the run failed"
    )

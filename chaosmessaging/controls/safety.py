"""Safety net: revert every fault the run left behind, whatever the outcome.

Declare it in an experiment (or globally in settings / `--control-file`)::

    "controls": [{"name": "chaosmessaging-safety",
                  "provider": {"type": "python", "module": "chaosmessaging.controls.safety"}}]

Rollbacks are the experiment's own way back, but chaoslib skips them on interruption by default
and a deviation or an error can leave a fault in place. This control reverts what the fault ledger
(`chaosmessaging.faults`) still lists after the experiment: chaoslib turns Ctrl-C (SIGINT) and
SIGTERM into an "interrupted" status and still calls `after_experiment_control`, then
`cleanup_control`; an `atexit` hook covers a run that ends any other way short of SIGKILL.
Only SIGUSR2 ("exit without rollbacks") and SIGKILL skip it: `chaosmessaging revert` then
reverts the ledger by hand.

While reverting, SIGINT/SIGTERM are held back (and re-delivered afterwards) so an impatient second
Ctrl-C cannot leave a platform half-restored. Faults recorded by *another* live process (a
concurrent run sharing the same home) are left to that run's own safety net.
"""

from __future__ import annotations

import atexit
import signal
import threading
from typing import Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets
from logzero import logger

from chaosmessaging import faults

__all__ = ["configure_control", "after_experiment_control", "cleanup_control"]

_home: str | None = None
_atexit_registered = False


def configure_control(configuration: Configuration = None, secrets: Secrets = None,
                      revert_leftovers: bool = True, **kwargs: Any) -> None:
    """Remember where the ledger is; with `revert_leftovers`, first revert faults that a
    crashed earlier run left (their recording process is gone), so the run starts clean."""
    global _home, _atexit_registered
    _home = (configuration or {}).get("chaosmessaging_home")
    if not _atexit_registered:
        atexit.register(_revert, "at exit")
        _atexit_registered = True
    if revert_leftovers:
        _revert("before the experiment (left by an earlier run)")


def after_experiment_control(context: Experiment, state: Journal = None,
                             configuration: Configuration = None, secrets: Secrets = None,
                             **kwargs: Any) -> None:
    """Revert every fault still recorded once the experiment ended (any status)."""
    global _home
    _home = (configuration or {}).get("chaosmessaging_home", _home)
    results = _revert(f"after the experiment ({(state or {}).get('status', 'unknown')})")
    if results and isinstance(state, dict):
        # the journal says what the safety net had to undo, so a reader sees missed rollbacks
        state["chaosmessaging_safety_net"] = results


def cleanup_control(**kwargs: Any) -> None:
    """Last chance inside chaoslib: revert anything after_experiment could not."""
    _revert("at cleanup")


class _HoldSignals:
    """Defer SIGINT/SIGTERM while reverting; re-deliver them afterwards."""

    def __enter__(self) -> _HoldSignals:
        self.pending: list[int] = []
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        logger.warning("still reverting faults; the signal will be handled once done")
        self.pending.append(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        for sig in self.pending:
            signal.raise_signal(sig)


def _revert(when: str) -> list[dict]:
    try:
        with _HoldSignals():
            if not faults.active(_home):
                return []
            results = faults.revert_all(_home, mine_only=True)
    except Exception as exc:  # the safety net must never be the reason a run crashes
        logger.error(f"safety net could not read the fault ledger: {exc}; run "
                     "`chaosmessaging revert`")
        return []
    for r in results:
        if r["status"] == "reverted":
            logger.warning(f"safety net reverted {r['kind']} on {r['target']} {when}")
        else:
            logger.error(f"safety net could NOT revert {r['kind']} on {r['target']}: "
                         f"{r.get('error')}; run `chaosmessaging revert` once fixed")
    return results

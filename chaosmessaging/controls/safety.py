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

An interrupted run must also *stop*, not keep injecting faults. chaoslib's SIGTERM handler raises
`InterruptExecution` inside whatever runs; in a Python activity its provider turns that into an
ordinary `ActivityFailed` and the method goes on with the next activity (Ctrl-C's
`KeyboardInterrupt` does get through, but then chaoslib still sleeps the activity's
``pauses.after`` in full). So this control wraps the SIGINT/SIGTERM handlers to note the request,
then lets chaoslib's own handler raise as before, and:

- ``after_activity_control`` raises `InterruptExecution` once the activity is over, and
  ``before_activity_control`` refuses to start another one: the method stops there and chaoslib
  ends the run through its own path (status "interrupted", rollbacks per strategy, then
  ``after_experiment_control`` reverts the ledger). Rollback activities are never refused.
- while the interrupted activity unwinds, a SIGALRM timer re-raises the interruption every half
  second *only* in chaoslib's ``execute_activity`` frame itself, i.e. in its ``pauses`` sleeps,
  so a pause after an interrupted activity is cut short too.

The ledger is not reverted from the signal handler: the interrupted code may hold the ledger's
lock, and the handler would wait on it forever.

While reverting, SIGINT/SIGTERM are held back so an impatient second Ctrl-C cannot leave a
platform half-restored; once the run is already stopping they are then only logged (re-raising a
`KeyboardInterrupt` at the end of a run would lose its journal), otherwise re-delivered. Faults
recorded by *another* live process (a concurrent run sharing the same home) are left to that
run's own safety net.
"""

from __future__ import annotations

import atexit
import signal
import threading
from typing import Any

from chaoslib.activity import execute_activity
from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Activity, Configuration, Experiment, Journal, Run, Secrets
from logzero import logger

from chaosmessaging import faults
from chaosmessaging.util import home_of

__all__ = [
    "configure_control",
    "before_activity_control",
    "after_activity_control",
    "before_rollback_control",
    "after_experiment_control",
    "cleanup_control",
]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: how often a pending interruption is re-raised into chaoslib's pause sleeps
_NUDGE_EVERY_S = 0.5

_home: str | None = None
_atexit_registered = False
#: the signal that asked this run to stop, once one did
_stop_signal: int | None = None
#: rollbacks are the way back: once they start, nothing is refused or re-raised
_rolling_back = False
#: handlers found when the run configured this control (chaoslib's, or Python's defaults)
_chained: dict[int, Any] = {}
_saved_alarm: Any = None


def configure_control(
    configuration: Configuration = None,
    secrets: Secrets = None,
    revert_leftovers: bool = True,
    **kwargs: Any,
) -> None:
    """Remember where the ledger is, watch for SIGINT/SIGTERM (so an interrupted run stops
    instead of going on to the next activity); with `revert_leftovers`, first revert faults that
    a crashed earlier run left (their recording process is gone), so the run starts clean."""
    global _home, _atexit_registered, _stop_signal, _rolling_back
    _home = home_of(configuration)
    _stop_signal, _rolling_back = None, False
    if not _atexit_registered:
        atexit.register(_revert, "at exit")
        _atexit_registered = True
    _watch_signals()
    if revert_leftovers:
        _revert("before the experiment (left by an earlier run)", redeliver=True)


def before_activity_control(
    context: Activity, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    """Refuse to start an activity (of the method or a hypothesis) once the run was interrupted."""
    if _stop_signal is not None and not _rolling_back:
        raise InterruptExecution(
            f"{signal.Signals(_stop_signal).name} received: not starting "
            f"{context.get('type', 'activity')} {context.get('name')!r}"
        )


def after_activity_control(
    context: Activity,
    state: Run = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Once an interrupted activity is over, end the method the way chaoslib ends interrupted
    runs, even when the activity swallowed the interruption as an ordinary failure."""
    _stop_nudging()
    if _stop_signal is not None and not _rolling_back:
        raise InterruptExecution(
            f"{signal.Signals(_stop_signal).name} received during "
            f"{context.get('type', 'activity')} {context.get('name')!r}: "
            "stopping the run"
        )


def before_rollback_control(
    context: Experiment, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    """Let the rollbacks run (when the strategy plays them) even after an interruption."""
    global _rolling_back
    _rolling_back = True
    _stop_nudging()


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Revert every fault still recorded once the experiment ended (any status)."""
    global _home
    _stop_nudging()
    _home = (configuration or {}).get("chaosmessaging_home", _home)
    results = _revert(f"after the experiment ({(state or {}).get('status', 'unknown')})")
    if results and isinstance(state, dict):
        # the journal says what the safety net had to undo, so a reader sees missed rollbacks
        state["chaosmessaging_safety_net"] = results


def cleanup_control(**kwargs: Any) -> None:
    """Last chance inside chaoslib: revert anything after_experiment could not."""
    _stop_nudging()
    _revert("at cleanup")
    _unwatch_signals()


def stop_requested() -> bool:
    """True once SIGINT/SIGTERM asked this run to stop: long activities (e.g. a background
    sampler, which chaoslib waits for even after an interruption) should end early."""
    return _stop_signal is not None


# --- interruption ---------------------------------------------------------------------------


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _watch_signals() -> None:
    """Put `_on_signal` in front of the current SIGINT/SIGTERM handlers (chaoslib installed its
    SIGTERM one just before the controls are configured)."""
    if not _main_thread():
        return
    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        if current is not _on_signal:
            _chained[sig] = current
            signal.signal(sig, _on_signal)


def _unwatch_signals() -> None:
    if not _main_thread():
        return
    for sig, handler in list(_chained.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    _chained.clear()


def _interruption(signum: int) -> BaseException:
    """What chaoslib itself raises for this signal."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return InterruptExecution(f"{signal.Signals(signum).name} signal received")


def _on_signal(signum: int, frame: Any) -> None:
    global _stop_signal
    first = _stop_signal is None
    _stop_signal = signum
    if first and not _rolling_back:
        logger.warning(
            f"{signal.Signals(signum).name} received: the run stops after the current "
            "activity and the safety net reverts every recorded fault"
        )
        _start_nudging()
    chained = _chained.get(signum)
    if callable(chained):
        chained(signum, frame)  # chaoslib's / Python's own reaction (raises)
    raise _interruption(signum)


def _start_nudging() -> None:
    global _saved_alarm
    if not _main_thread() or _saved_alarm is not None:
        return
    _saved_alarm = signal.signal(signal.SIGALRM, _nudge)
    signal.setitimer(signal.ITIMER_REAL, _NUDGE_EVERY_S, _NUDGE_EVERY_S)


def _stop_nudging() -> None:
    global _saved_alarm
    if _saved_alarm is None or not _main_thread():
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, _saved_alarm)
    _saved_alarm = None


def _nudge(signum: int, frame: Any) -> None:
    """Re-raise the interruption only in chaoslib's `execute_activity` frame itself: there the
    only thing that takes time is a ``pauses`` sleep; anywhere else, wait for the next tick."""
    if _stop_signal is None or _rolling_back:
        _stop_nudging()
    elif frame is not None and frame.f_code is execute_activity.__code__:
        raise _interruption(_stop_signal)


# --- revert ---------------------------------------------------------------------------------


class _HoldSignals:
    """Defer SIGINT/SIGTERM while reverting; afterwards re-deliver them (`redeliver`) or only
    log them (the run is stopping anyway)."""

    def __init__(self, redeliver: bool) -> None:
        self.redeliver = redeliver

    def __enter__(self) -> _HoldSignals:
        self.pending: list[int] = []
        self.saved: dict[int, Any] = {}
        if _main_thread():
            for sig in _SIGNALS:
                self.saved[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        logger.warning(
            f"{signal.Signals(signum).name} received while reverting faults: "
            "finishing the revert first"
        )
        self.pending.append(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        if self.redeliver and _stop_signal is None:
            for sig in self.pending:
                signal.raise_signal(sig)


def _revert(when: str, redeliver: bool = False) -> list[dict]:
    try:
        with _HoldSignals(redeliver):
            if not faults.active(_home):
                return []
            results = faults.revert_all(_home, mine_only=True)
    except Exception as exc:  # the safety net must never be the reason a run crashes
        logger.error(
            f"safety net could not read the fault ledger: {exc}; run `chaosmessaging revert`"
        )
        return []
    for r in results:
        if r["status"] == "reverted":
            logger.warning(f"safety net reverted {r['kind']} on {r['target']} {when}")
        else:
            logger.error(
                f"safety net could NOT revert {r['kind']} on {r['target']}: "
                f"{r.get('error')}; run `chaosmessaging revert` once fixed"
            )
    return results

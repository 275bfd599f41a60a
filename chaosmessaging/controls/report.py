"""Control: write the run's fault windows and load phases into the journal, for `chaos report`.

A Chaos Toolkit journal times each activity, but not the faults an action leaves behind (a
latency toxic added by one action and removed by a rollback minutes later, a consumer killed and
restarted inside one action) nor the loads running in the background. While the experiment runs,
this control reads the fault ledger (`chaosmessaging.faults`) every `POLL_S` in a daemon thread;
at the end it writes into the journal::

    "chaosmessaging_report": {
        "fault_windows": [{"kind", "target", "injected_at", "reverted_at"}],   # epoch seconds
        "loads": [{"label", "script", "rate", "started_at", "duration_s", "ended_at"}]
    }

which `chaos report` shows on a time line (`chaosmessaging.report`). Nothing of a fault's recipe
or details goes in (no secret can: the ledger scrubs them anyway).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets
from logzero import logger

from chaosmessaging import faults, runs
from chaosmessaging.util import home_of

__all__ = ["before_experiment_control", "after_experiment_control", "JOURNAL_KEY"]

JOURNAL_KEY = "chaosmessaging_report"
POLL_S = 0.25


class _LedgerWatch(threading.Thread):
    def __init__(self, home: str | None) -> None:
        super().__init__(name="report-ledger-watch", daemon=True)
        self.home = home
        self.windows: dict[str, dict] = {}
        self.loads_ended: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(POLL_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.poll()

    def poll(self) -> None:
        now = time.time()
        try:
            current = {f.id: f for f in faults.active(self.home)}
        except Exception as error:  # a half-written ledger: read it next time
            logger.debug(f"report control: fault ledger unreadable: {error}")
            return
        for fid, fault in current.items():
            if fid not in self.windows:
                self.windows[fid] = {
                    "kind": fault.kind,
                    "target": fault.target,
                    "injected_at": fault.when,
                    "reverted_at": None,
                }
        for fid, window in self.windows.items():
            if fid not in current and window["reverted_at"] is None:
                window["reverted_at"] = now


_watch: _LedgerWatch | None = None


def before_experiment_control(
    context: Experiment, configuration: Configuration = None, **kwargs: Any
) -> None:
    """Start reading the fault ledger."""
    global _watch
    if _watch is not None:
        _watch.stop()
    _watch = _LedgerWatch(home_of(configuration))
    _watch.start()


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Write the fault windows and load phases into the journal (after rollbacks and reverts)."""
    global _watch
    if _watch is None or state is None:
        return
    watch, _watch = _watch, None
    watch.stop()
    windows = sorted(
        (w for w in watch.windows.values() if w["kind"] != "load"),
        key=lambda w: w["injected_at"],
    )
    load_ends = {
        w["target"].removeprefix("load:"): w["reverted_at"]
        for w in watch.windows.values()
        if w["kind"] == "load"
    }
    loads = []
    if os.environ.get(runs.ENV):  # a run that started no load has no run id
        for info in runs.loads(watch.home):
            loads.append(
                {
                    "label": info.get("label"),
                    "script": Path(str(info.get("script", ""))).name,
                    "rate": info.get("rate"),
                    "started_at": info.get("started_at"),
                    "duration_s": info.get("duration_s"),
                    "ended_at": load_ends.get(str(info.get("run_id"))),
                }
            )
    state[JOURNAL_KEY] = {"fault_windows": windows, "loads": loads}

"""Faults aimed at a stream consumer at its most fragile moment: holding unacknowledged entries.

A consumer killed while idle leaves nothing pending, which proves little. `crash_during_catch_up`
starts the consumer (usually after a downtime, so a backlog waits for it) and kills it as soon as
its consumer group holds at least `min_pending` unacknowledged entries, i.e. in the middle of a
batch, then records those entries (`probes.recovery.snapshot_pending`) so the hypothesis can
check each one was reclaimed and delivered after the restart.
"""

import os
import signal as signal_module
import threading
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.actions.process import record_service_fault, start_service
from chaosmessaging.clients.redis import pel_count, pending_snapshot
from chaosmessaging.stack import control
from chaosmessaging.stack.state import load_state
from chaosmessaging.util import home_of

__all__ = ["crash_during_catch_up"]


def crash_during_catch_up(
    name: str = "consumer",
    min_pending: int = 1,
    signal: str = "SIGKILL",
    timeout: float = 30.0,
    poll_interval: float = 0.002,
    label: str = "at_kill",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start embedded-stack service `name` and send it `signal` (default SIGKILL) as soon as the
    consumer group holds at least `min_pending` unacknowledged entries (polled every
    `poll_interval` s, up to `timeout` s). The entries pending at the kill are recorded under
    `label` for `probes.recovery.pending_reclaimed`.

    Returns `{"killed": bool, "pending_seen": N, "pending_at_kill": {...}, "waited_s": s}`; when
    the group never reached `min_pending` the service is left running and `killed` is false."""
    home = home_of(configuration)
    signum = control.signal_number(signal)
    signal_name = signal_module.Signals(signum).name
    seen = threading.Event()
    stop = threading.Event()
    observed = {"pending": 0, "error": None, "pid": None}

    def watch() -> None:
        while not stop.is_set():
            try:
                size = pel_count(configuration=configuration, secrets=secrets)
            except ActivityFailed as error:  # Redis hiccup: keep watching until the deadline
                observed["error"] = str(error)
                size = 0
            if size >= int(min_pending):
                # signal straight from here: a round trip through another activity would give
                # the consumer the milliseconds it needs to acknowledge its batch
                record = load_state(home).service(name)
                if record.alive():
                    os.killpg(record.pid, signum)
                    observed.update(pending=size, pid=record.pid)
                    seen.set()
                    return
            time.sleep(float(poll_interval))

    started = time.monotonic()
    watcher = threading.Thread(target=watch, name="pel-watch", daemon=True)
    watcher.start()
    try:
        try:
            start_service(name=name, timeout=timeout, configuration=configuration, secrets=secrets)
        except ActivityFailed:
            if not seen.is_set():  # it failed on its own, not because we killed it mid-start
                raise
        seen.wait(max(0.0, float(timeout) - (time.monotonic() - started)))
    finally:
        stop.set()
        watcher.join(5)
    waited = round(time.monotonic() - started, 3)
    if not seen.is_set():
        logger.warning(
            f"{name} never held {min_pending} pending entries within {timeout}s "
            "(no backlog to catch up?): not killed"
        )
        return {"killed": False, "pending_seen": 0, "waited_s": waited, "error": observed["error"]}
    control.stop_service(name, signum, home=home)  # waits until gone, updates the state file
    record_service_fault(name, observed["pid"], signal_name, home)
    snapshot = pending_snapshot(label=label, configuration=configuration, secrets=secrets)
    logger.info(
        f"{name} killed holding {snapshot['count']} unacknowledged entries "
        f"({observed['pending']} seen just before the kill)"
    )
    return {
        "killed": True,
        "pending_seen": observed["pending"],
        "pending_at_kill": snapshot,
        "waited_s": waited,
    }

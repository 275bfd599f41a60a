"""Faults aimed at a stream consumer at its most fragile moment: holding unacknowledged entries.

A consumer killed while idle leaves nothing pending, which proves little. `crash_during_catch_up`
starts the consumer (usually after a downtime, so a backlog waits for it) and kills it as soon as
its consumer group holds at least `min_pending` unacknowledged entries, i.e. in the middle of a
batch, then records those entries (`clients.redis.pending_snapshot`) so the hypothesis can
check each one was reclaimed and delivered after the restart.
"""

import signal as signal_module
import time
from collections.abc import Callable

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import faults, rig, runs
from chaosmessaging.actions._kill_engine import Arm, Trigger
from chaosmessaging.actions.load import running_loads
from chaosmessaging.actions.process import record_service_fault
from chaosmessaging.backends import Backend, BackendError, backend_for
from chaosmessaging.clients.redis import last_delivered_id, pending_read_after, pending_snapshot
from chaosmessaging.stack import control
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
    """Start service `name` (through its target backend: process, container or pod) and send it
    `signal` (default SIGKILL) as soon as it holds at least `min_pending` unacknowledged entries
    it read since this start (polled every `poll_interval` s, up to `timeout` s): entries a dead
    predecessor left pending do not count, so the kill lands in the middle of a batch the new
    incarnation read, not while it boots. Every entry pending at the kill (the predecessor's
    too) is recorded under `label` for `probes.recovery.pending_reclaimed`. A kill that lands
    just after the consumer acknowledged the batch it was seen holding (fewer than
    `min_pending` of its own left) is repeated: the service is started again and killed in its
    next batch, within `timeout`.

    Returns `{"killed": bool, "pending_seen": N, "pending_at_kill": {...}, "read_at_kill": N,
    "waited_s": s, "attempts": n, "identities": [...]}` (`pending_seen`: the entries of its own
    seen just before the kill, counted up to `min_pending`; `read_at_kill`: those pending at
    the kill); when it never held `min_pending` the service is left running and `killed` is
    false."""
    home = home_of(configuration)
    try:
        signal_name = signal_module.Signals(control.signal_number(signal)).name
    except ValueError as exc:
        raise ActivityFailed(f"{exc}; or give a number") from None
    backend = backend_for(name, configuration, secrets)

    def reading_since(since: str) -> Callable[[bool], int | None]:
        def holding(alive: bool) -> int | None:
            if not alive:
                return None
            size = pending_read_after(
                since, int(min_pending), configuration=configuration, secrets=secrets
            )
            return size if size >= int(min_pending) else None

        return holding

    started = time.monotonic()
    deadline = started + float(timeout)
    attempts, kill = 0, None
    while True:
        attempts += 1
        since = last_delivered_id(configuration=configuration, secrets=secrets)
        armed = _kill_when_holding(
            backend, name, signal_name, poll_interval, reading_since(since), deadline, home
        )
        waited = round(time.monotonic() - started, 3)
        if not armed.fired.is_set() and kill is not None:
            # no batch to catch it in again: the first kill stands, its snapshot recorded
            logger.warning(
                f"{name} never held {min_pending} pending entries again within {timeout}s: "
                f"the kill that left {kill[2]} of its own pending stands; {name} runs again"
            )
            armed, snapshot, read = kill
            break
        if not armed.fired.is_set():
            if _loads_ended(home):
                # the run's own load ended before this kill: no backlog is our schedule's fault
                raise rig.RigFailure(
                    f"the catch-up kill of {name} found fewer than {min_pending} pending "
                    "entries after its restart because this run's load had already ended: "
                    "lengthen the load (e.g. more messages) so it outlasts the faults before "
                    "this one"
                )
            logger.warning(
                f"{name} never held {min_pending} pending entries within {timeout}s "
                "(no backlog to catch up?): not killed"
            )
            return {
                "killed": False,
                "pending_seen": 0,
                "waited_s": waited,
                "attempts": attempts,
                "error": armed.seen.get("error"),
            }
        record_service_fault(name, armed.killed, signal_name, home, backend=backend)
        snapshot = pending_snapshot(label=label, configuration=configuration, secrets=secrets)
        read = pending_read_after(
            since, snapshot["count"] + 1, configuration=configuration, secrets=secrets
        )
        kill = (armed, snapshot, read)
        if read >= int(min_pending) or time.monotonic() >= deadline:
            break
        # the signal landed just after the consumer acknowledged the batch it was seen holding:
        # a kill holding nothing of its own proves nothing, so start it again for the next batch
        logger.info(
            f"{name} acknowledged its batch before the kill landed ({read} of its own pending, "
            f"{armed.seen['figure']} seen just before): starting it and killing it again"
        )
    logger.info(
        f"{name} killed holding {snapshot['count']} unacknowledged entries, {read} of them read "
        f"since its start ({armed.seen['figure']} seen just before the kill, attempt {attempts})"
    )
    return {
        "killed": True,
        "pending_seen": armed.seen["figure"],
        "pending_at_kill": snapshot,
        "read_at_kill": read,
        "waited_s": waited,
        "attempts": attempts,
        "identities": [i.to_json() for i in armed.killed],
    }


def _loads_ended(home: str) -> bool:
    """Whether this run started a load and none of its loads runs any more."""
    loads = [k for k in runs.facts(home=home) if k.startswith("load:")]
    return bool(loads) and not running_loads(home)


def _kill_when_holding(
    backend: Backend,
    name: str,
    signal_name: str,
    poll_interval: float,
    holding: Callable[[bool], int | None],
    deadline: float,
    home: str,
) -> Arm:
    """Start `name` and kill it the moment `holding` returns a figure, or give up at
    `deadline` (monotonic), or 5 s after the start when this run's load has ended."""
    with Trigger(backend, name, signal_name, poll_interval) as trigger:
        armed = trigger.arm(Arm(condition=holding))
        try:
            backend.start(name, max(1.0, deadline - time.monotonic()))
            faults.clear(f"service:{name}", home)
        except BackendError:
            if not armed.pulled.is_set():  # it failed on its own, not because we killed it
                raise
        ready = time.monotonic()
        while not armed.fired.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
            # the run's load ended and the restart found no backlog: waiting longer is pointless
            if time.monotonic() - ready >= 5.0 and _loads_ended(home):
                break
        trigger.disarm()
    return armed

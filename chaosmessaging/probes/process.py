"""Process identity over a run: "no crash" means the same processes before and after.

Reads the embedded stack's state (pid and start time per service); a service that crashed and was
restarted (by a supervisor, a control or a person) has another pid or start time.
"""

from __future__ import annotations

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging import runs
from chaosmessaging.stack.state import StackNotRunning, load_state
from chaosmessaging.util import home_of, same_process
from chaosmessaging.verdicts import Verdict, held_before_method, verdict

__all__ = ["snapshot_pids", "same_pids"]

DEFAULT_SERVICES = ("api", "dispatcher", "consumer")


def _identities(services: list, configuration: Configuration) -> dict:
    try:
        state = load_state(home_of(configuration))
    except StackNotRunning as error:
        raise ActivityFailed(f"{error}: process identity is read from the embedded stack") from None
    out = {}
    for name in services:
        record = state.services.get(name)
        alive = record is not None and same_process(record.pid, record.create_time) is not None
        out[name] = {
            "pid": record.pid if record else None,
            "create_time": record.create_time if record else None,
            "alive": alive,
        }
    return out


def snapshot_pids(
    label: str = "pids",
    services: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Record the pid and start time of each of `services` (default api, dispatcher, consumer)."""
    found = _identities(list(services or DEFAULT_SERVICES), configuration)
    runs.record(f"pids:{label}", found, home=home_of(configuration))
    return found


def same_pids(
    since: str = "pids", configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """
    Verdict: every service recorded by `snapshot_pids(label=since)` still runs as the same
    process (same pid and start time): nothing crashed or was restarted during the method.
    """
    if held := held_before_method(configuration):
        return held
    before = runs.fact(f"pids:{since}", home=home_of(configuration))
    if not before:
        return verdict(False, f"no pid snapshot {since!r}: add snapshot_pids(label={since!r})")
    now = _identities(list(before), configuration)
    changed = sorted(
        n
        for n in before
        if not now[n]["alive"]
        or (now[n]["pid"], now[n]["create_time"]) != (before[n]["pid"], before[n]["create_time"])
    )
    pids = {n: v["pid"] for n, v in now.items()}
    reason = f"restarted or gone: {changed}" if changed else f"same processes: {pids}"
    return verdict(not changed, reason, changed=changed, pids=pids)

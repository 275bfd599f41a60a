"""Identity over a run: "no crash" means every service runs as the same incarnation throughout.

One verdict for every target backend (`chaosmessaging.backends`): the embedded stack's processes
(pid + start time), Docker containers (id + start time + restart count), Kubernetes pods (UID +
the container's restart count). A service that crashed and was restarted (by a supervisor,
Docker, a controller, a control or a person) has another identity.
"""

from __future__ import annotations

from chaoslib.types import Configuration, Secrets

from chaosmessaging import runs
from chaosmessaging.backends import Identity, identities
from chaosmessaging.verdicts import Verdict, judges_method, logged, verdict

__all__ = ["snapshot_identities", "no_crash"]

_IDENTITIES = runs.Snapshots(
    "identities",
    "no identity snapshot {label!r}: add snapshot_identities(label={label!r}) to the method",
)

DEFAULT_SERVICES = ("auth", "api", "dispatcher", "consumer")


def snapshot_identities(
    label: str = "identities",
    services: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Record the identity of every instance of each of `services` (default: auth, api,
    dispatcher, consumer), through each service's target backend, under `label` for `no_crash`.
    Returns {service: [{"backend", "instance", "started_at", "restarts", "name", "alive"}]}."""
    found = identities(list(services or DEFAULT_SERVICES), configuration, secrets)
    return _IDENTITIES.record(
        label, {s: [i.to_json() for i in ids] for s, ids in found.items()}, configuration
    )


@judges_method(services={}, changed=[])
def no_crash(
    since: str = "identities", configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """
    Verdict: every instance recorded by `snapshot_identities(label=since)` still runs as the same
    incarnation (same pid and start time; same container start and restart count; same pod UID
    and restart count): none crashed, none was restarted. Figures: `services` {name: {"same",
    "before": [names], "now": [names]}} and `changed` (the services that did not hold).
    """
    before = _IDENTITIES.get(since, configuration)
    if not before:
        return verdict(False, _IDENTITIES.missing_reason(since), services={}, changed=[])
    now = identities(list(before), configuration, secrets)
    figures, changed = {}, []
    for service, was in before.items():
        was_ids = [Identity.from_json(w) for w in was]
        running = {i.key for i in now[service] if i.alive}
        same = bool(was_ids) and all(w.alive and w.key in running for w in was_ids)
        figures[service] = {
            "same": same,
            "before": [w.name or w.instance for w in was_ids],
            "now": [f"{i.name or i.instance}{'' if i.alive else ' (down)'}" for i in now[service]],
        }
        if not same:
            changed.append(service)
    reason = (
        f"{changed} crashed, were restarted or are gone"
        if changed
        else f"same incarnations throughout: {sorted(before)}"
    )
    return logged(verdict(not changed, reason, services=figures, changed=changed))

"""Authorization and optimistic-concurrency verdicts (plan test 2).

Judged from both sides: what the k6 load `k6/conversation_stress.js` saw request by request (its
summary counters: deliberate unauthorized reads and how they were answered, deliberately stale
updates and their 409s, `AUTHZ_LEAK` / `LIST_LEAK` / `STALE_ACCEPTED` lines in its log) and what
the API counted (`sanctum_security_denied_total`, `messaging_conversation_version_conflicts_total`,
growth since a `chaosmessaging.probes.metrics.snapshot_metrics` snapshot).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging import runs
from chaosmessaging.clients.prometheus import metrics_source, select
from chaosmessaging.probes.metrics import METRICS_SNAPSHOTS
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, judges_method, logged, verdict

__all__ = ["unauthorized_access_denied", "version_conflicts_detected"]

DENIED = "sanctum_security_denied_total"
CONFLICTS = "messaging_conversation_version_conflicts_total"
_LEAK_LINE = re.compile(r"((?:AUTHZ_LEAK|LIST_LEAK|STALE_ACCEPTED) [^\n\"]+)")
_ACCESS_FIGURES = {
    "attempts": None,
    "denied": None,
    "leaks": None,
    "list_leaks": None,
    "other_answers": None,
    "server_denied": None,
    "examples": [],
}
_CONFLICT_FIGURES = {
    "stale_updates": None,
    "conflicts": None,
    "stale_accepted": None,
    "server_conflicts": None,
    "examples": [],
}


def _load(label: str, configuration: Configuration) -> tuple[dict, dict] | None:
    loads = runs.loads(home_of(configuration), label)
    if not loads:
        return None
    info = loads[-1]
    path = Path(info["summary_path"])
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ActivityFailed(
            f"cannot read the k6 summary of load {label!r} ({path}: {error}); "
            "wait_for_load before judging it"
        ) from None
    return info, document.get("metrics", {})


def _count(metrics: dict, name: str) -> float:
    return float(metrics.get(name, {}).get("count", 0))


def _examples(info: dict, kind: str, limit: int = 10) -> list[str]:
    log = info.get("log_path")
    if not log or not Path(log).exists():
        return []
    found = _LEAK_LINE.findall(Path(log).read_text(errors="replace"))
    return [line.strip() for line in found if line.startswith(kind)][:limit]


def _grew(
    name: str,
    since: str,
    service: str,
    url: str | None,
    configuration: Configuration,
    secrets: Secrets,
) -> float | None:
    snapshot = METRICS_SNAPSHOTS.get(since, configuration)
    if snapshot is None:
        return None
    before = [(n, dict(lb), float(v)) for n, lb, v in snapshot["samples"]]
    now = metrics_source(service, url, configuration, secrets).samples(5.0)
    return (select(now, name, {}) or 0.0) - (select(before, name, {}) or 0.0)


@platform_applies
@judges_method(**_ACCESS_FIGURES)
def unauthorized_access_denied(
    label: str,
    since: str,
    service: str = "api",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: every deliberate unauthorized read of the k6 load `label` was refused with 403 and
    nothing leaked: no 200 to a non-participant (`authz_leaks`), no other user's conversation in
    a list (`list_leaks`), and the API counted the refusals (`sanctum_security_denied_total`
    grew since the snapshot `since`). A run that attempted no unauthorized read fails (it
    proved nothing). Figures: `attempts`, `denied`, `leaks`, `list_leaks`, `server_denied`,
    `examples` (the leaking requests, by user and conversation id).
    """
    figures = copy.deepcopy(_ACCESS_FIGURES)
    found = _load(label, configuration)
    if found is None:
        return verdict(False, f"no load {label!r} was recorded in this run", **figures)
    info, metrics = found
    figures.update(
        attempts=_count(metrics, "authz_attempts"),
        denied=_count(metrics, "authz_denied"),
        leaks=_count(metrics, "authz_leaks"),
        list_leaks=_count(metrics, "list_leaks"),
        other_answers=_count(metrics, "authz_other_answers"),
    )
    figures["server_denied"] = _grew(DENIED, since, service, url, configuration, secrets)
    if figures["leaks"] or figures["list_leaks"]:
        figures["examples"] = _examples(info, "AUTHZ_LEAK") + _examples(info, "LIST_LEAK")
        return verdict(
            False,
            f"LEAK: {figures['leaks']:g} unauthorized reads answered 200 and "
            f"{figures['list_leaks']:g} foreign conversations listed, e.g. "
            f"{figures['examples'][:3]}",
            **figures,
        )
    if not figures["attempts"]:
        return verdict(
            False, "no unauthorized read was attempted: nothing proves the 403s", **figures
        )
    if figures["denied"] < figures["attempts"]:
        return verdict(
            False,
            f"only {figures['denied']:g} of {figures['attempts']:g} unauthorized reads were "
            f"answered 403 ({figures['other_answers']:g} got neither 403 nor 200, e.g. 503 "
            "when overloaded)",
            **figures,
        )
    if figures["server_denied"] is None:
        return verdict(False, METRICS_SNAPSHOTS.missing_reason(since), **figures)
    if figures["server_denied"] < 1:
        return verdict(
            False,
            f"the API refused {figures['denied']:g} reads but {DENIED} did not grow",
            **figures,
        )
    reason = (
        f"all {figures['attempts']:g} unauthorized reads answered 403, no leak "
        f"({DENIED} +{figures['server_denied']:g})"
    )
    return logged(verdict(True, reason, **figures))


@platform_applies
@judges_method(**_CONFLICT_FIGURES)
def version_conflicts_detected(
    label: str,
    since: str,
    service: str = "api",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: optimistic concurrency held under the k6 load `label`: concurrent and deliberately
    stale updates were answered 409 (`version_conflicts` > 0), no update with a stale version was
    accepted (`stale_accepted` == 0), and the API's
    `messaging_conversation_version_conflicts_total` grew since the snapshot `since`. Figures:
    `stale_updates`, `conflicts`, `stale_accepted`, `server_conflicts`, `examples`.
    """
    figures = copy.deepcopy(_CONFLICT_FIGURES)
    found = _load(label, configuration)
    if found is None:
        return verdict(False, f"no load {label!r} was recorded in this run", **figures)
    info, metrics = found
    figures.update(
        stale_updates=_count(metrics, "stale_updates"),
        conflicts=_count(metrics, "version_conflicts"),
        stale_accepted=_count(metrics, "stale_accepted"),
    )
    figures["server_conflicts"] = _grew(CONFLICTS, since, service, url, configuration, secrets)
    if figures["stale_accepted"]:
        figures["examples"] = _examples(info, "STALE_ACCEPTED")
        return verdict(
            False,
            f"{figures['stale_accepted']:g} updates with a stale version were "
            f"accepted (lost updates), e.g. {figures['examples'][:3]}",
            **figures,
        )
    if not figures["conflicts"]:
        return verdict(
            False,
            "no update was answered 409: optimistic concurrency was never "
            "exercised or never detected a conflict",
            **figures,
        )
    if figures["server_conflicts"] is None:
        return verdict(False, METRICS_SNAPSHOTS.missing_reason(since), **figures)
    if figures["server_conflicts"] < 1:
        return verdict(
            False,
            f"k6 saw {figures['conflicts']:g} conflicts but {CONFLICTS} did not grow",
            **figures,
        )
    reason = (
        f"{figures['conflicts']:g} updates answered 409 ({figures['stale_updates']:g} "
        f"deliberately stale), none stale accepted ({CONFLICTS} "
        f"+{figures['server_conflicts']:g})"
    )
    return logged(verdict(True, reason, **figures))

"""Recovery verdicts that span a run: what was pending at a fault, how long recovery took.

A fault's effect is judged after the method, in the steady-state hypothesis, from facts the method
recorded (`chaosmessaging.runs`; the instants by `probes.marks.mark`: "method", "consumer_restart"),
`pending_snapshot` (the fault actions take it themselves) the consumer group's pending entries
at the fault, `wait_for_recovery` the time from a mark until the consumer has caught up.
Before the method ran (the first pass of the hypothesis), these verdicts hold trivially; after
it, a missing fact is a failure.
"""

from __future__ import annotations

import time

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging import runs
from chaosmessaging.config import lookup
from chaosmessaging.clients.postgres import pg_fetch
from chaosmessaging.clients.redis import PENDING, pending_snapshot, redis_client, redis_unreachable
from chaosmessaging.probes.postgres import outbox_oldest_undispatched_seconds
from chaosmessaging.probes.redis import consumer_lag, oldest_pending_idle_ms
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, judges_method, logged, verdict

__all__ = [
    "pending_snapshot",  # the fault actions' own recorder, also an activity under its one name
    "wait_for_recovery",
    "pending_reclaimed",
    "recovery_within",
    "kills_reclaimed",
]

#: recovery times measured by `wait_for_recovery` (the nightly history reads `recovery:*`)
_RECOVERIES = runs.Snapshots(
    "recovery", "no recovery measured since {label!r}: did wait_for_recovery run?"
)


def _home(configuration: Configuration) -> str | None:
    return home_of(configuration)


def _still_pending(
    entries: list[dict], stream: str, group: str, configuration: Configuration, secrets: Secrets
) -> list[str]:
    """Which of the snapshot's entries are still pending in the group (one range scan)."""
    if not entries:
        return []
    ids = {e["id"] for e in entries}
    ordered = sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    client, url = redis_client(None, configuration, secrets)
    try:
        hits = client.xpending_range(
            stream, group, min=ordered[0], max=ordered[-1], count=len(ordered) + 100000
        )
    except redis.ResponseError:
        return []  # group gone (empty Redis): nothing can still be pending in it
    except redis.RedisError as error:
        raise redis_unreachable(url, error) from None
    return [h["message_id"] for h in hits if h["message_id"] in ids]


_UNACCOUNTED = """
SELECT count(*) FROM messages m
WHERE starts_with(m.client_msg_id, $1)
  AND m.created_at < now() - make_interval(secs => $2::float8)
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)
"""


def _behind(
    include_outbox: bool, max_lag_seconds: float, configuration: Configuration, secrets: Secrets
) -> tuple[dict, str | None]:
    """How far behind the pipeline is at each stage we can see, and why it is not caught up
    (None when it is). A missing stream or group is not zero lag: nothing consumed it."""
    lag = consumer_lag(max_count=1, configuration=configuration, secrets=secrets)
    behind = {
        "undelivered_s": lag["seconds"],
        "pending_idle_s": oldest_pending_idle_ms(configuration=configuration, secrets=secrets)
        / 1000.0,
    }
    if include_outbox:
        behind["outbox_s"] = outbox_oldest_undispatched_seconds(
            configuration=configuration, secrets=secrets
        )
    late = [k for k, v in behind.items() if v > float(max_lag_seconds)]
    # the run's accepted messages must be accounted for too: older than the allowed lag and
    # still without a delivery means the pipeline has not caught up, whatever Redis says
    home = _home(configuration)
    unaccounted = 0
    if runs.method_started(home):
        unaccounted = int(
            pg_fetch(
                _UNACCOUNTED,
                (runs.message_prefix(None, home), float(max_lag_seconds)),
                configuration=configuration,
                secrets=secrets,
            )[0][0]
        )
        behind["unaccounted_messages"] = unaccounted
    if lag.get("missing"):
        behind["missing"] = lag["missing"]
        return behind, f"{lag['missing']} is missing: nothing is consuming"
    if late:
        return behind, f"behind by more than {float(max_lag_seconds):g} s at {', '.join(late)}"
    if unaccounted:
        return behind, (
            f"{unaccounted} accepted messages of this run older than "
            f"{float(max_lag_seconds):g} s have no delivery"
        )
    return behind, None


def wait_for_recovery(
    since: str = "consumer_restart",
    max_lag_seconds: float = 2.0,
    include_outbox: bool = False,
    reclaimed: str = None,
    timeout: float = 120.0,
    interval: float = 0.25,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Poll until the pipeline has caught up: the oldest entry not yet delivered to the consumer
    group and the longest-idle pending entry are both younger than `max_lag_seconds` (and, with
    `include_outbox`, the oldest undispatched outbox row too; with `reclaimed`, no entry of
    the `pending_snapshot` a fault action took under that label, or those labels,
    comma-separated, may still be pending either), AND every message this run got accepted that
    is older than `max_lag_seconds` has a delivery.

    A missing stream or consumer group is not zero lag: it counts as not recovered (nothing
    consumes), as do unreachable dependencies. Recovery time is measured from the mark `since`
    (see `mark`) and recorded as the fact `recovery:<since>`. Returns `{"recovered": bool,
    "seconds": s, "behind": {...}, "why_not": reason or null}`; a timeout is recorded as not
    recovered (the hypothesis then fails), not raised."""
    start = runs.MARKS.get(since, configuration) or time.time()
    deadline = time.monotonic() + float(timeout)
    # `reclaimed` may name several snapshots, comma-separated ("at_kill,random_kills")
    snapshot = [
        entry
        for part in (reclaimed or "").split(",")
        if part.strip()
        for entry in PENDING.get(part.strip(), configuration, [])
    ]
    stream = lookup("messaging_stream", configuration, secrets)
    group = lookup("messaging_group", configuration, secrets)
    behind: dict = {}
    why = "not measured"
    recovered = False
    while time.monotonic() < deadline:
        try:
            behind, why = _behind(include_outbox, float(max_lag_seconds), configuration, secrets)
            still = len(_still_pending(snapshot, stream, group, configuration, secrets))
        except ActivityFailed as error:
            behind, why = {"error": str(error)}, str(error)
        else:
            if reclaimed:
                behind[f"still_pending_from_{reclaimed}"] = still
                if still and why is None:
                    why = f"{still} entries pending at {reclaimed} are still pending"
            if why is None:
                recovered = True
                break
        time.sleep(interval)
    result = {
        "recovered": recovered,
        "seconds": round(time.time() - start, 3),
        "behind": behind,
        "why_not": None if recovered else why,
    }
    _RECOVERIES.record(since, result, configuration)
    logger.info(f"recovery since {since}: {result}")
    return result


@platform_applies
@judges_method()
def recovery_within(
    limit_seconds: float,
    since: str = "consumer_restart",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """Verdict: the recovery measured from mark `since` (by `wait_for_recovery`) took at most
    `limit_seconds` (figures: `seconds`, `recovered`, `limit_seconds`, `behind`).

    Holds before the method ran; after it, no measurement fails."""
    measured = _RECOVERIES.get(since, configuration)
    if measured is None:
        reason = _RECOVERIES.missing_reason(since)
        logger.warning(reason)
        return verdict(
            False, reason, seconds=None, recovered=None, limit_seconds=float(limit_seconds)
        )
    ok = bool(measured["recovered"]) and measured["seconds"] <= float(limit_seconds)
    if measured["recovered"]:
        reason = f"recovered in {measured['seconds']} s (limit {float(limit_seconds):g} s)"
    else:
        why = measured.get("why_not") or f"behind: {measured['behind']}"
        reason = f"not recovered after {measured['seconds']} s: {why}"
    return logged(
        verdict(
            ok,
            reason,
            seconds=measured["seconds"],
            recovered=measured["recovered"],
            limit_seconds=float(limit_seconds),
            behind=measured.get("behind"),
        )
    )


@platform_applies
@judges_method(pending_at_fault=0, reclaimed=0)
def pending_reclaimed(
    label: str = "at_kill",
    stream: str = None,
    group: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """Verdict: every entry pending at `label` was reclaimed — no longer pending, its message
    delivered. Figures: `pending_at_fault`, `reclaimed`, `still_pending` (ids),
    `undelivered` (message ids). Holds before the method; after it, a missing snapshot fails."""
    entries = PENDING.get(label, configuration)
    if entries is None:
        return verdict(
            False,
            PENDING.missing_reason(label),
            pending_at_fault=0,
            reclaimed=0,
            still_pending=[],
            undelivered=[],
        )
    stream = lookup("messaging_stream", configuration, secrets, stream)
    group = lookup("messaging_group", configuration, secrets, group)
    still = _still_pending(entries, stream, group, configuration, secrets)
    message_ids = [e["message_id"] for e in entries if e.get("message_id")]
    delivered = set()
    if message_ids:
        rows = pg_fetch(
            "SELECT message_id::text AS id FROM deliveries WHERE message_id = ANY($1::uuid[])",
            [message_ids],
            configuration=configuration,
            secrets=secrets,
        )
        delivered = {r["id"] for r in rows}
    undelivered = [m for m in message_ids if m not in delivered]
    reclaimed = len(entries) - len(
        set(still) | {e["id"] for e in entries if e.get("message_id") in undelivered}
    )
    reason = (
        f"{reclaimed} of {len(entries)} entries pending at {label} reclaimed; "
        f"{len(still)} still pending, {len(undelivered)} undelivered"
    )
    result = verdict(
        not still and not undelivered,
        reason,
        pending_at_fault=len(entries),
        reclaimed=reclaimed,
        still_pending=still[:50],
        undelivered=undelivered[:50],
    )
    if not result["ok"]:
        logger.warning(f"entries pending at {label} not reclaimed: {result}")
    return result


def _delivered(message_ids: list[str], configuration: Configuration, secrets: Secrets) -> set[str]:
    if not message_ids:
        return set()
    rows = pg_fetch(
        "SELECT message_id::text AS id FROM deliveries WHERE message_id = ANY($1::uuid[])",
        [message_ids],
        configuration=configuration,
        secrets=secrets,
    )
    return {r["id"] for r in rows}


@platform_applies
@judges_method(kills=[])
def kills_reclaimed(
    label: str = "random_kills",
    min_kills: int = 1,
    stream: str = None,
    group: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """Verdict on the kills of `actions.random_faults.kill_at_random_moments` (fact
    `kills:<label>`): at least `min_kills` kills happened, and for each one every entry pending
    at that kill was reclaimed (no longer pending) and its message delivered.

    Figures: `seed` (replay with it), `kills` (per kill: `n`, `t_s`, `moment`, `down_s`,
    `down_vs_reclaim`, `pending_at_kill`, `reclaimed`, `delivered`, `still_pending`,
    `undelivered` message ids), `pending_total`. Holds before the method; after it, no
    recorded kill fails."""
    home = _home(configuration)
    kills = runs.fact(f"kills:{label}", home=home)
    seed = runs.fact(f"seed:{label}", home=home)
    if not kills:
        return verdict(
            False,
            f"no kill recorded under {label!r}: did kill_at_random_moments run?",
            seed=seed,
            kills=[],
            pending_total=0,
        )
    stream = lookup("messaging_stream", configuration, secrets, stream)
    group = lookup("messaging_group", configuration, secrets, group)
    table, problems, total = [], [], 0
    for kill in kills:
        entries = PENDING.get(f"{label}#{kill['n']}", configuration, [])
        still = _still_pending(entries, stream, group, configuration, secrets)
        message_ids = [e["message_id"] for e in entries if e.get("message_id")]
        delivered = _delivered(message_ids, configuration, secrets)
        undelivered = [m for m in message_ids if m not in delivered]
        total += len(entries)
        row = {
            key: kill.get(key)
            for key in (
                "n",
                "t_s",
                "moment",
                "fraction",
                "backlog_ms",
                "behind_ms",
                "down_s",
                "down_vs_reclaim",
            )
        }
        row.update(
            pending_at_kill=len(entries),
            reclaimed=len(entries) - len(still),
            delivered=len(delivered),
            still_pending=still[:20],
            undelivered=undelivered[:20],
        )
        table.append(row)
        if still or undelivered:
            problems.append(
                f"kill {kill['n']}: {len(still)} of {len(entries)} entries still "
                f"pending, {len(undelivered)} undelivered"
            )
    if len(kills) < int(min_kills):
        problems.insert(0, f"only {len(kills)} of {int(min_kills)} kills happened")
    reason = (
        "; ".join(problems)
        if problems
        else (
            f"{len(kills)} kills (seed {seed}): all {total} entries pending at them reclaimed and "
            "delivered"
        )
    )
    result = verdict(
        not problems,
        f"{reason} (seed {seed})" if problems else reason,
        seed=seed,
        kills=table,
        pending_total=total,
    )
    return logged(result)

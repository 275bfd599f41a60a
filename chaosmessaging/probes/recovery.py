"""Recovery verdicts that span a run: what was pending at a fault, how long recovery took.

A fault's effect is judged after the method, in the steady-state hypothesis, from facts the method
recorded (`chaosmessaging.runs`): `mark` notes an instant ("method", "consumer_restart"),
`snapshot_pending` the consumer group's pending entries at the fault, `wait_for_recovery` the time
from a mark until the consumer has caught up. Before the method ran (the first pass of the
hypothesis), these verdicts hold trivially; after it, a missing fact is a failure.
"""

from __future__ import annotations

import time

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.config import lookup
from chaosmessaging.clients.postgres import pg_fetch
from chaosmessaging.clients.redis import pending_snapshot, redis_client, redis_unreachable
from chaosmessaging.probes.postgres import outbox_oldest_undispatched_seconds
from chaosmessaging.probes.redis import consumer_lag, oldest_pending_idle_ms
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, held_before_method, verdict

__all__ = ["mark", "snapshot_pending", "wait_for_recovery", "pending_reclaimed",
           "recovery_within"]


def _home(configuration: Configuration) -> str | None:
    return home_of(configuration)


def mark(label: str = "method", configuration: Configuration = None,
         secrets: Secrets = None) -> float:
    """Record the current time under `label` in the run's facts and return it (epoch seconds).

    Put `mark(label="method")` first in a method so the hypothesis knows the method ran, and a
    mark just before removing a fault so recovery is timed from that instant."""
    now = time.time()
    runs.record(f"mark:{label}", now, home=_home(configuration))
    return now


def snapshot_pending(label: str = "at_kill", stream: str = None, group: str = None,
                     max_entries: int = 100000, configuration: Configuration = None,
                     secrets: Secrets = None) -> dict:
    """Record the consumer group's pending entries (ids and message ids) under `label`.

    Returns `{"count": N, "consumers": {name: n}, "sample": [first ids]}`."""
    return pending_snapshot(label, stream, group, max_entries, configuration, secrets)


def _still_pending(entries: list[dict], stream: str, group: str, configuration: Configuration,
                   secrets: Secrets) -> list[str]:
    """Which of the snapshot's entries are still pending in the group (one range scan)."""
    if not entries:
        return []
    ids = {e["id"] for e in entries}
    ordered = sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    client, url = redis_client(None, configuration, secrets)
    try:
        hits = client.xpending_range(stream, group, min=ordered[0], max=ordered[-1],
                                     count=len(ordered) + 100000)
    except redis.ResponseError:
        return []  # group gone (empty Redis): nothing can still be pending in it
    except redis.RedisError as error:
        raise redis_unreachable(url, error) from None
    return [h["message_id"] for h in hits if h["message_id"] in ids]


def _behind_seconds(include_outbox: bool, configuration: Configuration,
                    secrets: Secrets) -> dict:
    """How far behind the pipeline is, in seconds, at each stage we can see."""
    lag = consumer_lag(max_count=1, configuration=configuration, secrets=secrets)
    behind = {"undelivered_s": lag["seconds"],
              "pending_idle_s": oldest_pending_idle_ms(configuration=configuration,
                                                       secrets=secrets) / 1000.0}
    if include_outbox:
        behind["outbox_s"] = outbox_oldest_undispatched_seconds(configuration=configuration,
                                                                secrets=secrets)
    return behind


def wait_for_recovery(since: str = "consumer_restart", max_lag_seconds: float = 2.0,
                      include_outbox: bool = False, reclaimed: str = None,
                      timeout: float = 120.0,
                      interval: float = 0.25, configuration: Configuration = None,
                      secrets: Secrets = None) -> dict:
    """Poll until the pipeline has caught up: the oldest entry not yet delivered to the consumer
    group and the longest-idle pending entry are both younger than `max_lag_seconds` (and, with
    `include_outbox`, the oldest undispatched outbox row too; with `reclaimed`, no entry of
    the `snapshot_pending` taken under that label may still be pending either).

    Recovery time is measured from the mark `since` (see `mark`) and recorded as the fact
    `recovery:<since>`. Returns `{"recovered": bool, "seconds": s, "behind": {...}}`; a timeout
    is recorded as not recovered (the hypothesis then fails), not raised. Unreachable
    dependencies during the wait count as not recovered yet."""
    start = runs.fact(f"mark:{since}", home=_home(configuration)) or time.time()
    deadline = time.monotonic() + float(timeout)
    snapshot = runs.fact(f"pending:{reclaimed}", [], home=_home(configuration)) if reclaimed \
        else []
    stream = lookup("messaging_stream", configuration, secrets)
    group = lookup("messaging_group", configuration, secrets)
    behind: dict = {}
    recovered = False
    while time.monotonic() < deadline:
        try:
            behind = _behind_seconds(include_outbox, configuration, secrets)
            still = len(_still_pending(snapshot, stream, group, configuration, secrets))
        except ActivityFailed as error:
            behind = {"error": str(error)}
        else:
            caught_up = all(v <= float(max_lag_seconds) for v in behind.values())
            if reclaimed:
                behind[f"still_pending_from_{reclaimed}"] = still
            if caught_up and still == 0:
                recovered = True
                break
        time.sleep(interval)
    result = {"recovered": recovered, "seconds": round(time.time() - start, 3),
              "behind": behind}
    runs.record(f"recovery:{since}", result, home=_home(configuration))
    logger.info(f"recovery since {since}: {result}")
    return result


def recovery_within(limit_seconds: float, since: str = "consumer_restart",
                    configuration: Configuration = None, secrets: Secrets = None) -> Verdict:
    """Verdict: the recovery measured from mark `since` (by `wait_for_recovery`) took at most
    `limit_seconds` (figures: `seconds`, `recovered`, `limit_seconds`, `behind`).

    Holds before the method ran; after it, no measurement fails."""
    if held := held_before_method(configuration):
        return held
    measured = runs.fact(f"recovery:{since}", home=_home(configuration))
    if measured is None:
        reason = f"no recovery measured since {since!r}: did wait_for_recovery run?"
        logger.warning(reason)
        return verdict(False, reason, seconds=None, recovered=None,
                       limit_seconds=float(limit_seconds))
    ok = bool(measured["recovered"]) and measured["seconds"] <= float(limit_seconds)
    if measured["recovered"]:
        reason = f"recovered in {measured['seconds']} s (limit {float(limit_seconds):g} s)"
    else:
        reason = f"not recovered after {measured['seconds']} s; behind: {measured['behind']}"
    logger.info(f"{reason}: {'ok' if ok else 'BREACHED'}")
    return verdict(ok, reason, seconds=measured["seconds"], recovered=measured["recovered"],
                   limit_seconds=float(limit_seconds), behind=measured.get("behind"))


def pending_reclaimed(label: str = "at_kill", stream: str = None, group: str = None,
                      configuration: Configuration = None, secrets: Secrets = None) -> Verdict:
    """Verdict: every entry pending at `label` was reclaimed — no longer pending, its message
    delivered. Figures: `pending_at_fault`, `reclaimed`, `still_pending` (ids),
    `undelivered` (message ids). Holds before the method; after it, a missing snapshot fails."""
    if held := held_before_method(configuration, pending_at_fault=0, reclaimed=0):
        return held
    entries = runs.fact(f"pending:{label}", home=_home(configuration))
    if entries is None:
        return verdict(False, f"no snapshot of the entries pending at {label!r}: did the fault "
                       "action record one?", pending_at_fault=0, reclaimed=0, still_pending=[],
                       undelivered=[])
    stream = lookup("messaging_stream", configuration, secrets, stream)
    group = lookup("messaging_group", configuration, secrets, group)
    still = _still_pending(entries, stream, group, configuration, secrets)
    message_ids = [e["message_id"] for e in entries if e.get("message_id")]
    delivered = set()
    if message_ids:
        rows = pg_fetch("SELECT message_id::text AS id FROM deliveries "
                        "WHERE message_id = ANY($1::uuid[])",
                        [message_ids], configuration=configuration, secrets=secrets)
        delivered = {r["id"] for r in rows}
    undelivered = [m for m in message_ids if m not in delivered]
    reclaimed = len(entries) - len(set(still) | {e["id"] for e in entries
                                                  if e.get("message_id") in undelivered})
    reason = (f"{reclaimed} of {len(entries)} entries pending at {label} reclaimed; "
              f"{len(still)} still pending, {len(undelivered)} undelivered")
    result = verdict(not still and not undelivered, reason, pending_at_fault=len(entries),
                     reclaimed=reclaimed, still_pending=still[:50], undelivered=undelivered[:50])
    if not result["ok"]:
        logger.warning(f"entries pending at {label} not reclaimed: {result}")
    return result

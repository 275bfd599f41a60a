"""Verdicts from client-side delivery accounting: what each device really received.

A message counts as delivered when a participant's device received it, not when a server wrote a
row. `websocket_delivery` matches, by the platform's message id, every message acknowledged in
this run in the conversations `actions.websocket.start_clients` created — as the senders saw it
accepted (k6's ACK lines, `evidence.acks`: every platform), joined with the server-side ledger's
rows where the platform file describes one (`evidence:`; the reference stack's ``messages``) — to
the messages recorded by every device of every member of its conversation (`clients.ws` frames
file), and judges (engine: `evidence.delivery`):

- lost: a (message, device) pair with no frame;
- duplicated: a pair with more than one frame;
- leaked: a frame for a conversation the device's user is not in (as the API lists it to the user,
  and as the run's conversations say);
- corrupted: a frame whose payload hash differs from the one the sender put in the client id;
- late: frames slower than `late_ms` (accepted -> received), and the p95 of first receipts
  (devices run as slow readers, `start_clients(slow_devices=...)`, are judged for loss only);
- disconnects: sockets closed by the server or the network while the devices ran, and the
  longest time a device was without a socket (reconnect).

`foreign_reads_denied` asks the API, as users of the run, for conversations they are not in: every
answer must be 403 (a 200 is a leak).
"""

from __future__ import annotations

from collections import Counter

import httpx
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging import runs
from chaosmessaging.clients.postgres import pg_fetch
from chaosmessaging.clients.platform import PlatformCallFailed, PlatformClient, Session
from chaosmessaging.clients.ws import read_frames
from chaosmessaging.evidence.acks import read_acks
from chaosmessaging.evidence.delivery import account
from chaosmessaging.platform import PlatformError, load_platform
from chaosmessaging.config import lookup
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, judges_method, not_applicable, verdict

__all__ = ["websocket_delivery", "foreign_reads_denied", "frames_steady"]

EXAMPLES = 5

_ACKED = """
SELECT id::text AS id, conversation_id::text AS conversation_id, client_msg_id,
       extract(epoch FROM created_at)::float8 AS accepted_at
FROM messages
WHERE starts_with(client_msg_id, $1) AND conversation_id = ANY($2::uuid[])
"""


@platform_applies
@judges_method()
def websocket_delivery(
    label: str = "ws",
    load_label: str = None,
    p95_ms: float = 500.0,
    late_ms: float = None,
    max_late: int = None,
    max_lost: int = 0,
    max_duplicated: int = 0,
    max_leaked: int = 0,
    max_corrupted: int = 0,
    max_disconnects: int = 0,
    max_reconnect_s: float = None,
    min_reconnects: int = 0,
    min_messages: int = 1,
    removal_budget_ms: float = 100.0,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Client-side delivery verdict for the devices labelled `label` (see the module docstring):
    every message acknowledged in this run (by the load `load_label`, or all loads) in their
    conversations must reach every device of every member exactly once, byte-exact, never
    another user's device, with the p95 of accepted -> received within `p95_ms` (and at most
    `max_late` frames over `late_ms`, when given). At most `max_disconnects` sockets may be
    closed by the server or the network, each device must be back within `max_reconnect_s`
    (when given), and at least `min_reconnects` reconnections must have happened (proof that a
    fault really cut the sockets). Fewer than `min_messages` acknowledged messages is a failure
    (no evidence). Participants removed during the run (`actions.membership.
    remove_participants`, fact ``removed:<label>``) keep their devices open: a frame of that
    conversation reaching them whose message was accepted more than `removal_budget_ms` after
    the removal was acknowledged is leaked (`leaked_after_removal` counts them); messages
    accepted before that are neither expected nor leaked there (`excused`: such (message,
    device) pairs; `received_excused`: frames they received). Figures: acknowledged,
    expected, received, lost, duplicated, leaked, leaked_after_removal, removals, corrupted,
    late, latency p50/p95/p99 ms, disconnects, reconnects, max reconnect seconds, examples by id.
    """
    home = home_of(configuration)
    fleet = runs.fact(f"ws:{label}", home=home)
    if not fleet:
        return verdict(
            False,
            f"no WebSocket clients labelled {label!r} ran in this run (start_clients missing?)",
        )
    members = {c["id"]: c["members"] for c in fleet["conversations"]}
    acked, accepted_at, sources = _acknowledged(
        members, load_label, dsn, home, configuration, secrets
    )
    # (conversation, user) -> when the removal was acknowledged, plus the budget
    removed = {
        (x["conversation"], x["user"]): float(x["at"]) + float(removal_budget_ms) / 1000
        for x in runs.fact(f"removed:{label}", default=[], home=home)
    }
    return account(
        fleet,
        read_frames(label, home),
        acked,
        p95_ms=float(p95_ms),
        late_ms=late_ms,
        max_late=max_late,
        max_lost=int(max_lost),
        max_duplicated=int(max_duplicated),
        max_leaked=int(max_leaked),
        max_corrupted=int(max_corrupted),
        max_disconnects=int(max_disconnects),
        max_reconnect_s=max_reconnect_s,
        min_reconnects=int(min_reconnects),
        min_messages=int(min_messages),
        removed=removed,
        accepted_at=accepted_at,
        evidence=sources,
    )


def _acknowledged(
    members: dict, load_label: str | None, dsn: str | None, home, configuration, secrets
) -> tuple[dict[str, str], dict[str, float], dict]:
    """{message id: conversation id} of every message acknowledged in the run's conversations:
    what the senders saw accepted (client side, every platform), joined with the server-side
    ledger where the platform file describes one (a message the server committed whose answer
    the sender never got must be delivered too)."""
    prefix = runs.message_prefix(load_label, home)
    acks = {
        m: a
        for m, a in read_acks(home, load_label).items()
        if a.get("conversation_id") in members
        and str(a.get("client_msg_id", "")).startswith(prefix)
    }
    acked = {m: a["conversation_id"] for m, a in acks.items()}
    # when the sender got the answer: an upper bound of when the platform accepted it
    accepted_at = {m: float(a["t"]) for m, a in acks.items() if a.get("t") is not None}
    sources = {"senders": len(acked)}
    try:
        platform = load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None
    if platform.evidence is not None and platform.evidence.sql is not None:
        rows = pg_fetch(_ACKED, (prefix, list(members)), dsn, configuration, secrets, timeout=30)
        ledger = {r["id"]: r["conversation_id"] for r in rows}
        accepted_at.update({r["id"]: float(r["accepted_at"]) for r in rows})
        sources["ledger"] = len(ledger)
        sources["ledger_only"] = len(set(ledger) - set(acked))
        acked.update(ledger)
    return acked, accepted_at, sources


@platform_applies
@judges_method()
def foreign_reads_denied(
    label: str = "ws",
    attempts: int = 10,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Up to `attempts` reads (GET /v1/conversations/{id}) of a conversation of the run's clients
    `label` by a run user who is not one of its members: every answer must be 403 (a 2xx is a
    leak, anything else a failure). Holds trivially when every user is in every conversation.
    Figures: attempts, denied (403), leaked (2xx), other statuses.
    """
    fleet = runs.fact(f"ws:{label}", home=home_of(configuration))
    if not fleet:
        return verdict(False, f"no WebSocket clients labelled {label!r} ran in this run")
    # round-robin over the conversations, a different outsider each round
    outsiders = {
        c["id"]: [u for u in fleet["users"] if u not in c["members"]]
        for c in fleet["conversations"]
    }
    candidates = [c for c, users in outsiders.items() if users]
    pairs = []
    for i in range(int(attempts) if candidates else 0):
        conversation = candidates[i % len(candidates)]
        users = outsiders[conversation]
        pairs.append((users[(i // len(candidates)) % len(users)], conversation))
    if not pairs:
        return verdict(True, "every user is in every conversation: nothing to deny", attempts=0)
    try:
        platform = load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None
    read = platform.conversations.get
    if read is None or not read.forbidden:
        return not_applicable(
            "the platform file describes no conversations.get with a 'forbidden' status",
            attempts=0,
        )
    client = PlatformClient(platform, configuration, secrets)
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    statuses: Counter = Counter()
    leaks = []
    sessions: dict[str, Session] = {}
    try:
        for user, conversation in pairs:
            if user not in sessions:
                sessions[user] = client.login(user, password, fleet["users"].index(user))
            r = client.call(
                "conversations.get",
                read,
                {"conversation_id": conversation, "user_id": sessions[user].user_id},
                sessions[user].token,
            )
            statuses[r.status_code] += 1
            if r.status_code in read.ok:
                leaks.append(f"{user} read {conversation}")
    except (httpx.HTTPError, PlatformCallFailed) as exc:
        raise ActivityFailed(f"cannot ask the platform as a run user: {exc}") from None
    denied = sum(statuses.get(code, 0) for code in read.forbidden)
    figures = dict(
        attempts=len(pairs),
        denied=denied,
        leaked=len(leaks),
        statuses={str(k): v for k, v in statuses.items()},
    )
    if leaks:
        return verdict(
            False,
            f"{len(leaks)} reads by non-participants answered {read.ok}: {leaks[:5]}",
            **figures,
        )
    if denied != len(pairs):
        return verdict(
            False,
            f"only {denied} of {len(pairs)} non-participant reads answered {read.forbidden}: "
            f"{dict(statuses)}",
            **figures,
        )
    return verdict(
        True, f"all {len(pairs)} non-participant reads answered {read.forbidden}", **figures
    )


@platform_applies
@judges_method()
def frames_steady(
    label: str = "ws",
    windows: int = 5,
    max_deviation_pct: float = 50.0,
    min_frames: int = 10,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: the devices `label` received frames at a steady rate (frames sent grow linearly):
    the time from their first to their last frame is cut into `windows` equal windows and the
    frames received in each stay within `max_deviation_pct` % of the mean per window (a stalled
    gateway shows an empty window, a burst after a stall a full one). Fewer than `min_frames`
    frames fails (no evidence). Figures: per-window counts, mean, worst deviation %.
    """
    windows = int(windows)
    if windows < 2:
        raise ActivityFailed("windows must be 2 or more")
    times = sorted(
        f["received_at"] for f in read_frames(label, home_of(configuration)) if f["kind"] == "frame"
    )
    if len(times) < int(min_frames):
        return verdict(
            False, f"only {len(times)} frames (need {min_frames}): no evidence", frames=len(times)
        )
    start, span = times[0], max(times[-1] - times[0], 1e-9)
    counts = [0] * windows
    for t in times:
        counts[min(windows - 1, int((t - start) / span * windows))] += 1
    mean = len(times) / windows
    worst = max(abs(c - mean) / mean * 100 for c in counts)
    figures = dict(
        frames=len(times),
        seconds=round(span, 3),
        counts=counts,
        mean=round(mean, 2),
        worst_deviation_pct=round(worst, 1),
    )
    ok = worst <= float(max_deviation_pct)
    reason = (
        f"frames per window {counts} (mean {mean:.1f}): worst deviation {worst:.0f}% "
        f"(max {float(max_deviation_pct):g}%)"
    )
    return verdict(ok, reason, **figures)

"""Verdicts from client-side delivery accounting: what each WebSocket device really received.

A message counts as delivered when a participant's device received its frame, not when a server
wrote a row. `websocket_delivery` matches, by message id, every message the API acknowledged in
this run (the ``messages`` rows tagged with the run's client message id prefix, in the
conversations `actions.websocket.start_clients` created) to the frames recorded by every device of
every member of its conversation (`clients.ws` frames file), and judges:

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

import math
from collections import Counter

import httpx
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging import runs, targets
from chaosmessaging.clients.postgres import pg_fetch
from chaosmessaging.clients.ws import login, read_frames
from chaosmessaging.config import lookup
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, held_before_method, verdict

__all__ = ["websocket_delivery", "foreign_reads_denied", "frames_steady"]

EXAMPLES = 5

_ACKED = """
SELECT id::text AS id, conversation_id::text AS conversation_id, client_msg_id,
       extract(epoch FROM created_at)::float8 AS accepted_at
FROM messages
WHERE starts_with(client_msg_id, $1) AND conversation_id = ANY($2::uuid[])
"""


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


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
    if held := held_before_method(configuration):
        return held
    home = home_of(configuration)
    fleet = runs.fact(f"ws:{label}", home=home)
    if not fleet:
        return verdict(
            False,
            f"no WebSocket clients labelled {label!r} ran in this run (start_clients missing?)",
        )
    members = {c["id"]: c["members"] for c in fleet["conversations"]}
    devices_of = {
        u: [f"{u}/d{n}" for n in range(int(fleet["devices_per_user"]))] for u in fleet["users"]
    }
    user_of = {d: u for u, ds in devices_of.items() for d in ds}
    prefix = runs.message_prefix(load_label, home)
    rows = pg_fetch(_ACKED, (prefix, list(members)), dsn, configuration, secrets, timeout=30)
    acked = {r["id"]: r["conversation_id"] for r in rows}
    accepted_at = {r["id"]: float(r["accepted_at"]) for r in rows}
    # (conversation, user) -> when the removal was acknowledged, plus the budget
    removed = {
        (x["conversation"], x["user"]): float(x["at"]) + float(removal_budget_ms) / 1000
        for x in runs.fact(f"removed:{label}", default=[], home=home)
    }

    lines = read_frames(label, home)
    frames = [x for x in lines if x.get("kind") == "frame"]
    counts: Counter = Counter((f["message_id"], f["device"]) for f in frames)
    first: dict[tuple[str, str], float] = {}
    leaked, corrupted, unknown, late = [], [], [], []
    after_removal = received_excused = 0
    late_s = None if late_ms is None else float(late_ms) / 1000
    for f in frames:
        key = (f["message_id"], f["device"])
        if f.get("latency_s") is not None and key not in first:
            first[key] = f["latency_s"]
        user = user_of.get(f["device"], f.get("user"))
        if not f.get("mine") or user not in members.get(f["conversation_id"], ()):
            leaked.append(f"{f['message_id']} -> {f['device']}")
        elif (f["conversation_id"], user) in removed:
            sent = accepted_at.get(f["message_id"], f.get("accepted_at"))
            if sent is not None and float(sent) > removed[(f["conversation_id"], user)]:
                leaked.append(f"{f['message_id']} -> {f['device']} (after {user}'s removal)")
                after_removal += 1
            else:
                received_excused += 1
        if f.get("hash_ok") is False:
            corrupted.append(f"{f['message_id']} @ {f['device']}")
        if f["message_id"] not in acked and f["conversation_id"] in members:
            unknown.append(f["message_id"])
        if late_s is not None and f.get("latency_s") is not None and f["latency_s"] > late_s:
            late.append(f"{f['message_id']} @ {f['device']} ({_ms(f['latency_s'])} ms)")

    expected, excused, lost = 0, 0, []
    for message_id, conversation in acked.items():
        for user in members.get(conversation, ()):
            if (conversation, user) in removed:
                # before the removal optional, after it a leak (judged above)
                excused += len(devices_of.get(user, ()))
                continue
            for device in devices_of.get(user, ()):
                expected += 1
                if counts[(message_id, device)] == 0:
                    lost.append(f"{message_id} -> {device}")
    duplicated = [f"{m} -> {d} x{n}" for (m, d), n in counts.items() if n > 1]
    # a slow reader's latency is its own pause: judged for loss, not for speed
    slow = set(fleet.get("slow_devices") or ())
    latencies = [first[k] for k in first if k[0] in acked and k[1] not in slow]
    p50, p95, p99 = (_pct(latencies, q) for q in (0.5, 0.95, 0.99))
    closes = [x for x in lines if x.get("kind") == "close"]
    disconnects = [c for c in closes if c.get("by") in ("server", "network")]
    reconnects = [x["seconds"] for x in lines if x.get("kind") == "reconnect"]
    max_reconnect = max(reconnects) if reconnects else None
    close_codes = dict(Counter(str(c.get("code")) for c in closes))

    problems = []
    if len(acked) < int(min_messages):
        problems.append(
            f"only {len(acked)} acknowledged messages (need {min_messages}): no evidence"
        )
    checks = [
        ("lost", lost, max_lost),
        ("duplicated", duplicated, max_duplicated),
        ("leaked", leaked, max_leaked),
        ("corrupted", corrupted, max_corrupted),
    ]
    for name, items, limit in checks:
        if len(items) > int(limit):
            problems.append(f"{len(items)} {name} (max {limit}), e.g. {items[:EXAMPLES]}")
    if max_late is not None and len(late) > int(max_late):
        problems.append(
            f"{len(late)} frames later than {late_ms} ms (max {max_late}), e.g. {late[:EXAMPLES]}"
        )
    if p95 is not None and p95 * 1000 > float(p95_ms):
        problems.append(f"latency p95 {_ms(p95)} ms over {p95_ms} ms")
    if len(disconnects) > int(max_disconnects):
        problems.append(
            f"{len(disconnects)} sockets closed by the server or the network (max "
            f"{max_disconnects}), codes {close_codes}"
        )
    if len(reconnects) < int(min_reconnects):
        problems.append(
            f"only {len(reconnects)} reconnections (need {min_reconnects}): the fault did not "
            "cut the sockets"
        )
    if (
        max_reconnect_s is not None
        and max_reconnect is not None
        and max_reconnect > float(max_reconnect_s)
    ):
        problems.append(
            f"a device was without a socket for {max_reconnect:.2f}s (max {max_reconnect_s}s)"
        )
    figures = dict(
        acknowledged=len(acked),
        devices=len(user_of),
        expected=expected,
        received=len(frames),
        lost=len(lost),
        duplicated=len(duplicated),
        leaked=len(leaked),
        leaked_after_removal=after_removal,
        removals=len(removed),
        excused=excused,
        received_excused=received_excused,
        slow_devices=len(slow),
        corrupted=len(corrupted),
        late=len(late),
        unacknowledged_frames=len(set(unknown)),
        p50_ms=_ms(p50),
        p95_ms=_ms(p95),
        p99_ms=_ms(p99),
        disconnects=len(disconnects),
        close_codes=close_codes,
        reconnects=len(reconnects),
        max_reconnect_s=None if max_reconnect is None else round(max_reconnect, 3),
        examples={
            "lost": lost[:EXAMPLES],
            "duplicated": duplicated[:EXAMPLES],
            "leaked": leaked[:EXAMPLES],
            "corrupted": corrupted[:EXAMPLES],
        },
    )
    if problems:
        return verdict(False, "; ".join(problems), **figures)
    return verdict(
        True,
        f"all {len(acked)} acknowledged messages reached all {expected} "
        f"(message, device) pairs exactly once, byte-exact, none leaked; p95 "
        f"{_ms(p95)} ms; {len(disconnects)} disconnects",
        **figures,
    )


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
    if held := held_before_method(configuration):
        return held
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
    auth = targets.check(
        str(lookup("messaging_auth_url", configuration, secrets)),
        "messaging_auth_url",
        configuration,
        secrets,
    )
    api = targets.check(
        str(lookup("messaging_api_url", configuration, secrets)),
        "messaging_api_url",
        configuration,
        secrets,
    )
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    statuses: Counter = Counter()
    leaks = []
    tokens: dict[str, str] = {}
    try:
        for user, conversation in pairs:
            if user not in tokens:
                tokens[user] = login(auth, user, password)["token"]
            r = httpx.get(
                f"{api.rstrip('/')}/v1/conversations/{conversation}",
                timeout=10,
                headers={"Authorization": f"Bearer {tokens[user]}"},
            )
            statuses[r.status_code] += 1
            if 200 <= r.status_code < 300:
                leaks.append(f"{user} read {conversation}")
    except httpx.HTTPError as exc:
        raise ActivityFailed(f"cannot ask the API as a run user: {exc}") from None
    denied = statuses.get(403, 0)
    figures = dict(
        attempts=len(pairs),
        denied=denied,
        leaked=len(leaks),
        statuses={str(k): v for k, v in statuses.items()},
    )
    if leaks:
        return verdict(
            False, f"{len(leaks)} reads by non-participants answered 2xx: {leaks[:5]}", **figures
        )
    if denied != len(pairs):
        return verdict(
            False,
            f"only {denied} of {len(pairs)} non-participant reads answered 403: {dict(statuses)}",
            **figures,
        )
    return verdict(True, f"all {len(pairs)} non-participant reads answered 403", **figures)


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
    if held := held_before_method(configuration):
        return held
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

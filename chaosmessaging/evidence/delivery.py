"""Client-side delivery accounting: what each device really received, against what was accepted.

`account` matches every acknowledged message (by the platform's id) to the message records every
device of every member of its conversation wrote (`clients.ws` frames file) and judges lost,
duplicated, leaked, corrupted and late deliveries, latency percentiles, disconnects and
reconnections. It needs no access to the platform's database: `acked` comes from the senders
(`evidence.acks`), optionally joined with a server-side ledger by the caller.
"""

from __future__ import annotations

import math
from collections import Counter

from chaosmessaging.verdicts import Verdict, verdict

__all__ = ["account"]

EXAMPLES = 5


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def account(
    fleet: dict,
    lines: list[dict],
    acked: dict[str, str],
    p95_ms: float,
    late_ms: float | None,
    max_late: int | None,
    max_lost: int,
    max_duplicated: int,
    max_leaked: int,
    max_corrupted: int,
    max_disconnects: int,
    max_reconnect_s: float | None,
    min_reconnects: int,
    min_messages: int,
    removed: dict[tuple[str, str], float] | None = None,
    accepted_at: dict[str, float] | None = None,
    **extra_figures,
) -> Verdict:
    """The verdict on fleet fact `fleet` (``ws:<label>``), its recorded `lines` and the
    acknowledged messages `acked` ({message id: conversation id}).

    `removed`: {(conversation, user): deadline}, participants removed during the run (the time
    their removal was acknowledged plus the invalidation budget): a message of that conversation
    accepted after the deadline that reaches one of their open devices is leaked; one accepted
    before it is neither expected nor leaked there. `accepted_at`: {message id: when the platform
    accepted it} (the ledger's time, else the frame's, else the sender's answer). Devices the
    fleet ran as slow readers (``slow_devices``) are judged for loss, not for latency."""
    removed = removed or {}
    accepted_at = accepted_at or {}
    members = {c["id"]: c["members"] for c in fleet["conversations"]}
    devices_of = {
        u: [f"{u}/d{n}" for n in range(int(fleet["devices_per_user"]))] for u in fleet["users"]
    }
    user_of = {d: u for u, ds in devices_of.items() for d in ds}
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
        **extra_figures,
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

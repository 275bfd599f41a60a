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
    members = {c["id"]: c["members"] for c in fleet["conversations"]}
    devices_of = {
        u: [f"{u}/d{n}" for n in range(int(fleet["devices_per_user"]))] for u in fleet["users"]
    }
    user_of = {d: u for u, ds in devices_of.items() for d in ds}
    frames = [x for x in lines if x.get("kind") == "frame"]
    seen = _Frames(members, user_of, removed, accepted_at or {}, acked, late_ms)
    for f in frames:
        seen.add(f)
    counts: Counter = Counter((f["message_id"], f["device"]) for f in frames)
    expected, excused, lost = _expected(acked, members, devices_of, removed, counts)
    duplicated = [f"{m} -> {d} x{n}" for (m, d), n in counts.items() if n > 1]
    # a slow reader's latency is its own pause: judged for loss, not for speed
    slow = set(fleet.get("slow_devices") or ())
    latencies = [seen.first[k] for k in seen.first if k[0] in acked and k[1] not in slow]
    p50, p95, p99 = (_pct(latencies, q) for q in (0.5, 0.95, 0.99))
    sockets = _Sockets(lines)
    problems = _count_problems(
        len(acked),
        min_messages,
        [
            ("lost", lost, max_lost),
            ("duplicated", duplicated, max_duplicated),
            ("leaked", seen.leaked, max_leaked),
            ("corrupted", seen.corrupted, max_corrupted),
        ],
    )
    problems += _timing_problems(seen.late, late_ms, max_late, p95, p95_ms)
    problems += sockets.problems(max_disconnects, min_reconnects, max_reconnect_s)
    counted = {"lost": lost, "duplicated": duplicated, "expected": expected, "excused": excused}
    figures = _figures(acked, user_of, frames, seen, counted, removed, slow, (p50, p95, p99))
    examples = {"lost": lost, "duplicated": duplicated, "leaked": seen.leaked}
    examples["corrupted"] = seen.corrupted
    figures = {
        **figures,
        **_socket_figures(sockets, extra_figures),
        "examples": {k: v[:EXAMPLES] for k, v in examples.items()},
    }
    if problems:
        return verdict(False, "; ".join(problems), **figures)
    return verdict(
        True,
        f"all {len(acked)} acknowledged messages reached all {expected} "
        f"(message, device) pairs exactly once, byte-exact, none leaked; p95 "
        f"{_ms(p95)} ms; {len(sockets.disconnects)} disconnects",
        **figures,
    )


def _figures(
    acked: dict[str, str],
    user_of: dict[str, str],
    frames: list[dict],
    seen: _Frames,
    counted: dict,
    removed: dict,
    slow: set,
    percentiles: tuple,
) -> dict:
    lost, duplicated = counted["lost"], counted["duplicated"]
    p50, p95, p99 = percentiles
    return dict(
        acknowledged=len(acked),
        devices=len(user_of),
        expected=counted["expected"],
        received=len(frames),
        lost=len(lost),
        duplicated=len(duplicated),
        leaked=len(seen.leaked),
        leaked_after_removal=seen.after_removal,
        removals=len(removed),
        excused=counted["excused"],
        received_excused=seen.received_excused,
        slow_devices=len(slow),
        corrupted=len(seen.corrupted),
        late=len(seen.late),
        unacknowledged_frames=len(set(seen.unknown)),
        p50_ms=_ms(p50),
        p95_ms=_ms(p95),
        p99_ms=_ms(p99),
    )


def _socket_figures(sockets: _Sockets, extra_figures: dict) -> dict:
    longest = sockets.longest
    return dict(
        disconnects=len(sockets.disconnects),
        close_codes=sockets.close_codes,
        **extra_figures,
        reconnects=len(sockets.reconnects),
        max_reconnect_s=None if longest is None else round(longest, 3),
    )


class _Frames:
    """The recorded frames judged one at a time: first latency per (message, device), and the
    leaked, corrupted, unknown and late frames."""

    def __init__(
        self,
        members: dict[str, list[str]],
        user_of: dict[str, str],
        removed: dict[tuple[str, str], float],
        accepted_at: dict[str, float],
        acked: dict[str, str],
        late_ms: float | None,
    ) -> None:
        self.members, self.user_of, self.removed = members, user_of, removed
        self.accepted_at, self.acked = accepted_at, acked
        self.late_s = None if late_ms is None else float(late_ms) / 1000
        self.first: dict[tuple[str, str], float] = {}
        self.leaked: list[str] = []
        self.corrupted: list[str] = []
        self.unknown: list[str] = []
        self.late: list[str] = []
        self.after_removal = self.received_excused = 0

    def add(self, f: dict) -> None:
        key = (f["message_id"], f["device"])
        if f.get("latency_s") is not None and key not in self.first:
            self.first[key] = f["latency_s"]
        user = self.user_of.get(f["device"], f.get("user"))
        if not f.get("mine") or user not in self.members.get(f["conversation_id"], ()):
            self.leaked.append(f"{f['message_id']} -> {f['device']}")
        elif (f["conversation_id"], user) in self.removed:
            sent = self.accepted_at.get(f["message_id"], f.get("accepted_at"))
            if sent is not None and float(sent) > self.removed[(f["conversation_id"], user)]:
                self.leaked.append(f"{f['message_id']} -> {f['device']} (after {user}'s removal)")
                self.after_removal += 1
            else:
                self.received_excused += 1
        if f.get("hash_ok") is False:
            self.corrupted.append(f"{f['message_id']} @ {f['device']}")
        if f["message_id"] not in self.acked and f["conversation_id"] in self.members:
            self.unknown.append(f["message_id"])
        late_s = self.late_s
        if late_s is not None and f.get("latency_s") is not None and f["latency_s"] > late_s:
            self.late.append(f"{f['message_id']} @ {f['device']} ({_ms(f['latency_s'])} ms)")


def _expected(
    acked: dict[str, str],
    members: dict[str, list[str]],
    devices_of: dict[str, list[str]],
    removed: dict[tuple[str, str], float],
    counts: Counter,
) -> tuple[int, int, list[str]]:
    """(expected (message, device) pairs, excused ones of removed members, the lost ones)."""
    expected, excused, lost = 0, 0, []
    for message_id, conversation in acked.items():
        for user in members.get(conversation, ()):
            if (conversation, user) in removed:
                # before the removal optional, after it a leak (judged with the frames)
                excused += len(devices_of.get(user, ()))
                continue
            for device in devices_of.get(user, ()):
                expected += 1
                if counts[(message_id, device)] == 0:
                    lost.append(f"{message_id} -> {device}")
    return expected, excused, lost


def _count_problems(
    acknowledged: int, min_messages: int, checks: list[tuple[str, list, int]]
) -> list[str]:
    """Too few acknowledged messages, and each (name, items, limit) over its limit."""
    problems = []
    if acknowledged < int(min_messages):
        problems.append(
            f"only {acknowledged} acknowledged messages (need {min_messages}): no evidence"
        )
    for name, items, limit in checks:
        if len(items) > int(limit):
            problems.append(f"{len(items)} {name} (max {limit}), e.g. {items[:EXAMPLES]}")
    return problems


def _timing_problems(
    late: list[str], late_ms: float | None, max_late: int | None, p95: float | None, p95_ms: float
) -> list[str]:
    problems = []
    if max_late is not None and len(late) > int(max_late):
        problems.append(
            f"{len(late)} frames later than {late_ms} ms (max {max_late}), e.g. {late[:EXAMPLES]}"
        )
    if p95 is not None and p95 * 1000 > float(p95_ms):
        problems.append(f"latency p95 {_ms(p95)} ms over {p95_ms} ms")
    return problems


class _Sockets:
    """The fleet's sockets: closes by the server or the network, reconnections and the longest
    time a device was without a socket."""

    def __init__(self, lines: list[dict]) -> None:
        closes = [x for x in lines if x.get("kind") == "close"]
        self.disconnects = [c for c in closes if c.get("by") in ("server", "network")]
        self.reconnects = [x["seconds"] for x in lines if x.get("kind") == "reconnect"]
        self.longest = max(self.reconnects) if self.reconnects else None
        self.close_codes = dict(Counter(str(c.get("code")) for c in closes))

    def problems(
        self, max_disconnects: int, min_reconnects: int, max_reconnect_s: float | None
    ) -> list[str]:
        problems = []
        if len(self.disconnects) > int(max_disconnects):
            problems.append(
                f"{len(self.disconnects)} sockets closed by the server or the network (max "
                f"{max_disconnects}), codes {self.close_codes}"
            )
        if len(self.reconnects) < int(min_reconnects):
            problems.append(
                f"only {len(self.reconnects)} reconnections (need {min_reconnects}): the fault "
                "did not cut the sockets"
            )
        longest = self.longest
        if max_reconnect_s is not None and longest is not None and longest > float(max_reconnect_s):
            problems.append(
                f"a device was without a socket for {longest:.2f}s (max {max_reconnect_s}s)"
            )
        return problems

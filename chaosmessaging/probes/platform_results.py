"""Verdicts on platform runs (`chaosmessaging.actions.platform_load`): client-side evidence only.

Every probe returns ``{"ok", "reason", ...figures}`` (tolerance ``$.ok`` true) and holds trivially
before the method started (the hypothesis' first pass). A figure that breaches its limit makes
`ok` false and the reason names it with its value: the platform's result as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from chaoslib.types import Configuration, Secrets

from chaosmessaging import runs
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, judges_method, verdict

__all__ = [
    "platform_ready",
    "platform_delivery",
    "platform_crud",
    "platform_logins",
    "platform_largest_payload",
    "platform_outage",
]


def platform_ready(
    service: str = "client",
    timeout: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """The platform file's readiness check of `service`: its readiness path answered one of the
    file's ready statuses (figures: status, seconds)."""
    import time

    import httpx

    from chaosmessaging.platform import PlatformError, load_platform

    try:
        platform = load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        return verdict(False, str(exc))
    svc = platform.services.get(service)
    if svc is None or svc.readiness is None:
        return verdict(False, f"platform {platform.name!r} has no readiness check for {service!r}")
    url = svc.url + svc.readiness.path
    t0 = time.perf_counter()
    try:
        status = httpx.get(url, timeout=float(timeout)).status_code
    except httpx.HTTPError as exc:
        return verdict(False, f"{url}: no answer ({type(exc).__name__})", status=None)
    ok = status in svc.readiness.ready_status
    return verdict(
        ok, f"{url} answered {status}", status=status, seconds=round(time.perf_counter() - t0, 3)
    )


def _result(label: str, configuration: Configuration) -> dict | None:
    summary = runs.fact(f"platform:{label}", home=home_of(configuration))
    if not summary:
        return None
    return json.loads(Path(summary["results"]).read_text())


def _missing(label: str) -> Verdict:
    return verdict(False, f"no platform run labelled {label!r} finished in this run")


def _over(breaches: list[str], name: str, value, limit) -> None:
    if limit is None:
        return
    if value is None or value > float(limit):
        breaches.append(f"{name} {value} > {limit}")


def _figures(r: dict, keys: tuple[str, ...]) -> dict:
    return {k: r.get(k) for k in keys}


_DELIVERY = (
    "attempted",
    "dropped_sends",
    "sent",
    "acknowledged",
    "failed_sends",
    "send_error_rate",
    "send_statuses",
    "send_p50_ms",
    "send_p95_ms",
    "send_p99_ms",
    "expected_deliveries",
    "delivered",
    "lost",
    "duplicated",
    "leaked",
    "wrong_conversation",
    "corrupted",
    "received_after_removal",
    "unacknowledged_but_delivered",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "e2e_max_ms",
    "devices",
    "sync_requests",
    "dropped_sessions",
    "sync_gaps",
    "memory",
    "setup_s",
    "load_s",
    "settled_s",
)


@judges_method()
def platform_delivery(
    label: str = "messages",
    e2e_p95_ms: float = None,
    send_p95_ms: float = None,
    max_send_error_rate: float = None,
    max_dropped_sends: int = None,
    max_lost: int = 0,
    max_duplicated: int = 0,
    max_leaked: int = 0,
    max_corrupted: int = 0,
    max_after_removal: int = 0,
    max_dropped_sessions: int = None,
    max_memory_growth: float = None,
    min_acknowledged: int = 1,
    min_removals: int = 0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Client-side accounting of the message run `label`: every acknowledged message reached every
    device of every member exactly once (`max_lost`, `max_duplicated`), byte-exact
    (`max_corrupted`), never a non-member's device (`max_leaked`, wrong conversation included),
    nothing sent after a removal was acknowledged reached the removed user (`max_after_removal`),
    at least `min_removals` removals acknowledged; E2E p95 (send start -> sync answer) and send
    p95 within their limits, send error rate, dropped sends (open-loop sends that could not
    start), failed sync requests (`max_dropped_sessions`) and the server's memory growth (first
    vs last fifth of the samples) within theirs (None: not judged). Fewer than
    `min_acknowledged` acknowledged messages is a failure (no evidence).
    """
    r = _result(label, configuration)
    if r is None:
        return _missing(label)
    breaches: list[str] = []
    if (r["acknowledged"] or 0) < int(min_acknowledged):
        breaches.append(f"acknowledged {r['acknowledged']} < {min_acknowledged} (no evidence)")
    for name, limit in (
        ("lost", max_lost),
        ("duplicated", max_duplicated),
        ("corrupted", max_corrupted),
        ("received_after_removal", max_after_removal),
        ("dropped_sends", max_dropped_sends),
        ("dropped_sessions", max_dropped_sessions),
    ):
        _over(breaches, name, r.get(name), limit)
    _over(breaches, "leaked", r["leaked"] + r["wrong_conversation"], max_leaked)
    _over(breaches, "e2e_p95_ms", r.get("e2e_p95_ms"), e2e_p95_ms)
    _over(breaches, "send_p95_ms", r.get("send_p95_ms"), send_p95_ms)
    _over(breaches, "send_error_rate", r.get("send_error_rate"), max_send_error_rate)
    if max_memory_growth is not None:
        _over(breaches, "memory_growth", r["memory"].get("growth"), max_memory_growth)
    acked_removals = sum(1 for x in r["removals"] if x.get("acked"))
    if acked_removals < int(min_removals):
        breaches.append(f"acknowledged removals {acked_removals} < {min_removals}")
    figures = _figures(r, _DELIVERY)
    figures["removals_acknowledged"] = acked_removals
    examples = {
        k: r[k]
        for k in (
            "lost_examples",
            "duplicated_examples",
            "leaked_examples",
            "corrupted_examples",
            "after_removal_examples",
            "dropped_session_examples",
        )
        if r.get(k)
    }
    if breaches:
        return verdict(False, "breached: " + "; ".join(breaches), **figures, examples=examples)
    return verdict(True, "every criterion held", **figures)


@judges_method()
def platform_crud(
    label: str = "crud",
    p95_ms: float = None,
    max_error_rate: float = None,
    max_dropped: int = None,
    min_foreign_reads: int = 1,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    The CRUD run `label`: every deliberate read of another user's conversation answered
    forbidden (an `ok` is a leak, anything else a failure too), at least `min_foreign_reads` of
    them; overall p95 and error rate of the normal operations, open-loop drops within limits.
    """
    r = _result(label, configuration)
    if r is None:
        return _missing(label)
    breaches: list[str] = []
    if r["foreign_reads"] < int(min_foreign_reads):
        breaches.append(f"foreign reads {r['foreign_reads']} < {min_foreign_reads}")
    if r["foreign_leaks"]:
        breaches.append(f"{r['foreign_leaks']} reads of another user's conversation answered ok")
    if r["foreign_other"]:
        breaches.append(f"{r['foreign_other']} foreign reads answered neither forbidden nor ok")
    _over(breaches, "p95_ms", r.get("p95_ms"), p95_ms)
    _over(breaches, "error_rate", r.get("error_rate"), max_error_rate)
    _over(breaches, "dropped", r.get("dropped"), max_dropped)
    keys = (
        "attempted",
        "dropped",
        "operations",
        "achieved_rate",
        "error_rate",
        "p95_ms",
        "per_op",
        "foreign_reads",
        "foreign_forbidden",
        "foreign_leaks",
        "foreign_other",
    )
    figures = _figures(r, keys)
    if breaches:
        return verdict(False, "breached: " + "; ".join(breaches), **figures)
    return verdict(True, "every criterion held", **figures)


@judges_method()
def platform_logins(
    label: str = "logins",
    min_success_rate: float = 0.999,
    p95_ms: float = None,
    max_dropped: int = None,
    max_memory_growth: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """The login run `label`: success rate (of the logins attempted, dropped ones included) at
    least `min_success_rate`, p95 within `p95_ms`, server memory growth within its limit."""
    r = _result(label, configuration)
    if r is None:
        return _missing(label)
    breaches: list[str] = []
    if r["success_rate"] is None or r["success_rate"] < float(min_success_rate):
        breaches.append(f"success_rate {r['success_rate']} < {min_success_rate}")
    _over(breaches, "p95_ms", r.get("p95_ms"), p95_ms)
    _over(breaches, "dropped", r.get("dropped"), max_dropped)
    if max_memory_growth is not None:
        _over(breaches, "memory_growth", r["memory"].get("growth"), max_memory_growth)
    keys = (
        "rate",
        "duration_s",
        "attempted",
        "dropped",
        "succeeded",
        "success_rate",
        "achieved_rate",
        "failed_statuses",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "memory",
    )
    figures = _figures(r, keys)
    if breaches:
        return verdict(False, "breached: " + "; ".join(breaches), **figures)
    return verdict(True, "every criterion held", **figures)


@judges_method()
def platform_largest_payload(
    min_bytes: int = 1, configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """The largest payload found (`find_largest_payload`): at least `min_bytes`, and every
    accepted probe read back byte-exact through the delivery channel."""
    r = _result("largest", configuration)
    if r is None:
        return _missing("largest")
    keys = (
        "largest_accepted_bytes",
        "largest_accepted_encoded",
        "smallest_refused_bytes",
        "refused_errcode",
        "accepted_sent",
        "accepted_read_back",
        "accepted_byte_exact",
    )
    figures = _figures(r, keys)
    largest = r["largest_accepted_bytes"] or 0
    if largest < int(min_bytes):
        return verdict(False, f"largest accepted payload {largest} < {min_bytes} bytes", **figures)
    if r["accepted_byte_exact"] != r["accepted_sent"]:
        return verdict(
            False,
            f"{r['accepted_sent'] - r['accepted_byte_exact']} accepted payloads did not come back "
            "byte-exact",
            **figures,
        )
    return verdict(True, f"largest accepted payload {largest} bytes, read back exact", **figures)


@judges_method()
def platform_outage(
    label: str = "messages",
    down_mark: str = "fault",
    up_mark: str = "restored",
    recovery_s: float = 60.0,
    allowed_answers: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    What the platform answered while a dependency was down, from the sends of run `label`:
    the statuses of sends started between the marks `down_mark` and `up_mark` (no answer
    counted as "none"), each of which must be one of `allowed_answers` when given (plan T11:
    "503"), and the recovery time: from `up_mark` to the first acknowledged send after the last
    failed one (the platform answering again, then failing again, is not recovered yet), within
    `recovery_s`. (Loss is judged by `platform_delivery` on the same run.)
    """
    r = _result(label, configuration)
    if r is None:
        return _missing(label)
    down = runs.MARKS.get(down_mark, configuration)
    up = runs.MARKS.get(up_mark, configuration)
    if down is None or up is None:
        return verdict(False, f"marks {down_mark!r}/{up_mark!r} missing: the fault never ran")
    timeline = r["send_timeline"]
    during = [x for x in timeline if down <= x["at"] < up]
    answers: dict[str, int] = {}
    for x in during:
        key = str(x["status"]) if x["status"] is not None else "none"
        answers[key] = answers.get(key, 0) + 1
    after = [x for x in timeline if x["at"] >= up]
    first_ok = next((x for x in after if x["ok"]), None)
    # recovered: the first acknowledged send after the last failure that followed the restoration
    last_failure = max((x["at"] for x in after if not x["ok"]), default=None)
    stable = [x for x in after if x["ok"] and (last_failure is None or x["at"] > last_failure)]
    recovered_s = round(stable[0]["at"] - up, 2) if stable else None
    failures_after_first_ok = (
        0 if first_ok is None else sum(1 for x in after if x["at"] > first_ok["at"] and not x["ok"])
    )
    last_send = timeline[-1]["at"] if timeline else None
    figures = {
        "outage_s": round(up - down, 2),
        "sends_during_outage": len(during),
        "answers_during_outage": answers,
        "first_ok_after_restore_s": None if first_ok is None else round(first_ok["at"] - up, 2),
        "failures_after_first_ok": failures_after_first_ok,
        "recovered_s": recovered_s,
        "failures_after_restore": sum(1 for x in after if not x["ok"]),
        "sends_after_restore": len(after),
        "load_ended_after_restore_s": None if last_send is None else round(last_send - up, 2),
    }
    if allowed_answers is not None:
        allowed = {str(a) for a in allowed_answers} | {"200"}
        other = {k: v for k, v in answers.items() if k not in allowed}
        if other:
            return verdict(
                False,
                f"answers during the outage outside {sorted(allowed)}: {other}",
                **figures,
            )
    if recovered_s is None:
        return verdict(
            False,
            "no send was acknowledged after the last failure that followed the restoration",
            **figures,
        )
    if recovered_s > float(recovery_s):
        return verdict(False, f"recovered in {recovered_s}s > {recovery_s}s", **figures)
    return verdict(True, f"recovered in {recovered_s}s", **figures)

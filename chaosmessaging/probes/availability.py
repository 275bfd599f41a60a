"""How services behave while their dependencies fail (plan test 11): watched, then judged.

`watch_services` runs in the background beside a load and the faults, asking each service's
`/readyz` every `interval_s` and recording every answer (time, HTTP status, which dependency the
service reported degraded) beside the run's facts. The verdicts then judge the whole record:

- `answers_only_ok_or_unavailable`: every answer was 200 or 503 — never another 5xx, never a
  refused connection or a timeout (a crashed or hung service);
- `degradation_reported`: between two marks (a fault and its removal), every service whose
  readiness covers the dependency answered 503 naming it (after a short detection grace);
- `recovered_within`: after a mark (a restoration), every service answered 200 again (or, with
  `dependency`, reported that dependency "ok") within the limit, steadily (several answers in
  a row); later relapses are reported.

`snapshot_processes` / `same_processes` prove no service was restarted behind the experiment's
back: the same pids (and start times) before and after, read from the embedded stack's state.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psutil
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.clients.http import Readiness, service_url
from chaosmessaging.clients.samples import samples_path
from chaosmessaging.stack.state import StackNotRunning, load_state
from chaosmessaging.util import atomic_write_json, home_of
from chaosmessaging.verdicts import Verdict, held_before_method, verdict

__all__ = [
    "answers_only_ok_or_unavailable",
    "degradation_reported",
    "recovered_within",
    "same_processes",
    "snapshot_processes",
    "watch_services",
]

DEFAULT_SERVICES = ("auth", "api", "dispatcher", "consumer")
MIN_INTERVAL_S = 0.2


def _path(label: str, home: str | None) -> Path:
    return samples_path(f"watch-{label}", home)


def watch_services(
    duration_s: float,
    interval_s: float = 0.5,
    label: str = "watch",
    services: list = None,
    timeout: float = 2.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Ask each of `services` (default: auth, api, dispatcher, consumer) for `/readyz` every
    `interval_s` seconds for `duration_s` seconds and record every answer (epoch time, HTTP
    status — 0 when the connection failed or timed out after `timeout` s — and the dependencies
    reported not "ok") for the verdicts of this module. Run it with `"background": true`.
    Returns per service the count of answers by status.
    """
    duration_s, interval_s = float(duration_s), float(interval_s)
    if interval_s < MIN_INTERVAL_S:
        raise ActivityFailed(f"interval_s={interval_s:g} is below {MIN_INTERVAL_S} s")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(label)):
        raise ActivityFailed(f"label {label!r} must be letters, digits, '_', '.' or '-'")
    services = list(services or DEFAULT_SERVICES)
    urls = {s: service_url(s, None, "/readyz", configuration, secrets) for s in services}
    specs = {s: Readiness(s, configuration, secrets) for s in services}
    import httpx

    answers: dict[str, list] = {s: [] for s in services}
    start = time.monotonic()
    tick = 0
    with httpx.Client(timeout=float(timeout)) as client:
        while True:
            for service, url in urls.items():
                at = time.time()
                try:
                    response = client.get(url)
                    status = response.status_code
                    try:
                        _, degraded = specs[service].checks(response.json())
                    except ValueError:
                        degraded = []
                    error = None
                except httpx.HTTPError as exc:
                    status, degraded, error = 0, [], f"{type(exc).__name__}: {exc}"[:200]
                answers[service].append([round(at, 3), status, degraded, error])
            tick += 1
            next_at = start + tick * interval_s
            if next_at - start > duration_s:
                break
            time.sleep(max(0.0, next_at - time.monotonic()))
    path = _path(label, home_of(configuration))
    atomic_write_json(
        path, {"label": label, "interval_s": interval_s, "answers": answers}, indent=None
    )
    counts = {s: _count(a) for s, a in answers.items()}
    logger.info(f"watched {services} for {duration_s:g}s: {counts}")
    return {"label": label, "ticks": tick, "path": str(path), "answers": counts}


def _count(answers: list) -> dict:
    out: dict[str, int] = {}
    for _, status, _, _ in answers:
        out[str(status)] = out.get(str(status), 0) + 1
    return out


def _load(label: str, configuration: Configuration) -> dict | None:
    path = _path(label, home_of(configuration))
    return json.loads(path.read_text()) if path.exists() else None


def _no_watch(label: str, **figures) -> Verdict:
    return verdict(
        False,
        f"no answers watched under {label!r}: run watch_services("
        f"label={label!r}) in the background during the method",
        **figures,
    )


def answers_only_ok_or_unavailable(
    label: str = "watch", configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """
    Verdict: every `/readyz` answer `watch_services(label)` recorded was 200 or 503 — no other
    status (a 500 is a failure to degrade gracefully) and no failed connection (a crash or a
    hang). Figures: `services` {name: {status: count}}, `bad` (the first offending answers).
    """
    if held := held_before_method(configuration, services={}, bad=[]):
        return held
    watched = _load(label, configuration)
    if watched is None:
        return _no_watch(label, services={}, bad=[])
    bad = [
        {"service": s, "at": at, "status": status, "error": error}
        for s, answers in watched["answers"].items()
        for at, status, _, error in answers
        if status not in (200, 503)
    ]
    counts = {s: _count(a) for s, a in watched["answers"].items()}
    empty = [s for s, a in watched["answers"].items() if not a]
    ok = not bad and not empty
    if bad:
        reason = f"{len(bad)} answers neither 200 nor 503, first: {bad[0]}"
    elif empty:
        reason = f"no answer recorded for {empty}"
    else:
        reason = f"every answer 200 or 503: {counts}"
    logger.info(f"{reason} -> {'ok' if ok else 'BREACHED'}")
    return verdict(ok, reason, services=counts, bad=bad[:20])


def _window(start: str, end: str | None, configuration: Configuration) -> tuple[float, float]:
    home = home_of(configuration)
    begin = runs.fact(f"mark:{start}", home=home)
    if begin is None:
        raise LookupError(f"mark {start!r} was not set: add mark(label={start!r}) to the method")
    finish = runs.fact(f"mark:{end}", home=home) if end else None
    if end and finish is None:
        raise LookupError(f"mark {end!r} was not set: add mark(label={end!r}) to the method")
    return float(begin), float(finish) if finish else time.time()


def degradation_reported(
    dependency: str,
    since: str,
    until: str,
    grace_s: float = 3.0,
    label: str = "watch",
    services: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: from `grace_s` seconds after mark `since` (the fault) until mark `until` (its
    removal), every answer of each service (default: every watched one) was 503 with
    `dependency` among the degraded checks, and there was at least one such answer per service.
    Figures: `services` {name: {"answers", "reported", "not_reported"}}, `window_s`.
    """
    if held := held_before_method(configuration, services={}, window_s=None):
        return held
    watched = _load(label, configuration)
    if watched is None:
        return _no_watch(label, services={}, window_s=None)
    try:
        begin, end = _window(since, until, configuration)
    except LookupError as exc:
        return verdict(False, str(exc), services={}, window_s=None)
    begin += float(grace_s)
    figures, problems = {}, []
    for service in services or sorted(watched["answers"]):
        inside = [a for a in watched["answers"].get(service, []) if begin <= a[0] <= end]
        reported = [a for a in inside if a[1] == 503 and dependency in a[2]]
        figures[service] = {
            "answers": len(inside),
            "reported": len(reported),
            "not_reported": len(inside) - len(reported),
        }
        if not inside:
            problems.append(f"{service}: no answer between {since}+{grace_s:g}s and {until}")
        elif len(reported) < len(inside):
            wrong = next(a for a in inside if not (a[1] == 503 and dependency in a[2]))
            problems.append(
                f"{service}: {len(inside) - len(reported)} of {len(inside)} answers "
                f"did not report {dependency} degraded (e.g. HTTP {wrong[1]}, "
                f"degraded {wrong[2]})"
            )
    ok = not problems
    reason = "; ".join(problems) or (
        f"every service reported {dependency} degraded ({since} -> {until})"
    )
    logger.info(f"{reason} -> {'ok' if ok else 'BREACHED'}")
    return verdict(ok, reason, services=figures, window_s=round(end - begin, 3))


def recovered_within(
    since: str,
    limit_s: float,
    dependency: str = None,
    label: str = "watch",
    services: list = None,
    stable_answers: int = 3,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: after mark `since` (a restoration) every service (default: every watched one) was
    healthy again within `limit_s` seconds: recovered at the first of `stable_answers`
    consecutive healthy answers (one lucky answer is not recovery). Healthy is a 200 answer, or
    with `dependency`, an answer whose checks report that dependency "ok" (e.g. PostgreSQL back
    while Redis is still down). Unhealthy answers after recovery are reported as `relapses`
    (e.g. a readiness check timing out on a saturated machine), not judged here. Figures:
    `services` {name: seconds from the mark to recovery, or null}, `relapses` {name: count},
    `limit_s`, `worst_s`.
    """
    limit_s = float(limit_s)
    figures0 = {"services": {}, "relapses": {}, "limit_s": limit_s, "worst_s": None}
    if held := held_before_method(configuration, **figures0):
        return held
    watched = _load(label, configuration)
    if watched is None:
        return _no_watch(label, **figures0)
    try:
        begin, _ = _window(since, None, configuration)
    except LookupError as exc:
        return verdict(False, str(exc), **figures0)

    def healthy(answer: list) -> bool:
        if dependency:
            return answer[1] in (200, 503) and dependency not in answer[2]
        return answer[1] == 200

    need = max(1, int(stable_answers))
    figures: dict[str, float | None] = {}
    relapses: dict[str, int] = {}
    for service in services or sorted(watched["answers"]):
        after = [a for a in watched["answers"].get(service, []) if a[0] >= begin]
        marks = [healthy(a) for a in after]
        found = None
        for i in range(len(after)):
            window = marks[i : i + need]
            if window and all(window) and (len(window) == need or i + len(window) == len(after)):
                found = i
                break
        figures[service] = None if found is None else round(after[found][0] - begin, 3)
        relapses[service] = 0 if found is None else marks[found:].count(False)
    never = [s for s, v in figures.items() if v is None]
    worst = max((v for v in figures.values() if v is not None), default=None)
    what = f"{dependency} ok" if dependency else "ready (200)"
    if never:
        ok, reason = False, f"{never} not {what} again after {since} before the watch ended"
    else:
        ok = worst is not None and worst <= limit_s
        reason = f"every service {what} {worst:g}s after {since} at worst (limit {limit_s:g}s)"
        if any(relapses.values()):
            reason += f"; unhealthy answers after recovery: {relapses}"
    logger.info(f"{reason} -> {'ok' if ok else 'BREACHED'}")
    return verdict(ok, reason, services=figures, relapses=relapses, limit_s=limit_s, worst_s=worst)


def snapshot_processes(
    label: str = "processes",
    services: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Record the pid and start time of each embedded-stack service in `services` (default: auth,
    api, dispatcher, consumer) under `label`, for `same_processes`. Returns {name: pid}.
    """
    home = home_of(configuration)
    try:
        state = load_state(home)
    except StackNotRunning as exc:
        raise ActivityFailed(str(exc)) from None
    seen = {}
    for name in services or DEFAULT_SERVICES:
        record = state.service(name)
        seen[name] = {"pid": record.pid, "create_time": record.create_time}
    runs.record(f"processes:{label}", seen, home=home)
    return {name: v["pid"] for name, v in seen.items()}


def same_processes(
    since: str = "processes", configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """
    Verdict: every service recorded by `snapshot_processes(label=since)` still runs as the same
    process (same pid, same start time): none crashed, none was restarted. Figures: `services`
    {name: {"pid", "alive", "same"}}.
    """
    if held := held_before_method(configuration, services={}):
        return held
    before = runs.fact(f"processes:{since}", home=home_of(configuration))
    if before is None:
        return verdict(
            False,
            f"no snapshot {since!r}: add snapshot_processes(label={since!r}) to the method",
            services={},
        )
    figures, changed = {}, []
    for name, was in before.items():
        try:
            proc = psutil.Process(was["pid"])
            alive = proc.status() != psutil.STATUS_ZOMBIE
            same = alive and (
                was["create_time"] is None or abs(proc.create_time() - was["create_time"]) < 1
            )
        except psutil.Error:
            alive = same = False
        figures[name] = {"pid": was["pid"], "alive": alive, "same": same}
        if not same:
            changed.append(name)
    ok = not changed
    reason = (
        f"{changed} crashed or were restarted"
        if changed
        else f"same processes throughout: {sorted(before)}"
    )
    logger.info(f"{reason} -> {'ok' if ok else 'BREACHED'}")
    return verdict(ok, reason, services=figures)

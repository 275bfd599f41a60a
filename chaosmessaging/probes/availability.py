"""How services behave while their dependencies fail (plan test 11): watched, then judged.

`watch_services` runs in the background beside a load and the faults, asking each service's
`/readyz` every `interval_s` and recording every answer (time, HTTP status, which dependency the
service reported degraded) beside the run's facts. The verdicts then judge the whole record:

- `answers_only_ok_or_unavailable`: every answer was 200 or 503 — never another 5xx, never a
  refused connection or a timeout (a crashed or hung service);
- `degradation_reported`: between two marks (a fault and its removal), every service whose
  readiness covers the dependency answered 503 naming it (after one sampling interval of grace);
- `recovered_within`: after a mark (a restoration), every service answered 200 again (or, with
  `dependency`, reported that dependency "ok") within the limit, steadily (several answers in
  a row); later relapses are reported.

That no service was restarted behind the experiment's back is `probes.process.no_crash`'s verdict.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.clients.http import Readiness, service_url
from chaosmessaging.clients.samples import samples_path
from chaosmessaging.util import atomic_write_json, home_of
from chaosmessaging.verdicts import Verdict, argument, judges_method, logged, verdict

__all__ = [
    "answers_only_ok_or_unavailable",
    "degradation_reported",
    "recovered_within",
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
    status — 0 when the connection failed or timed out after `timeout` s — the dependencies
    reported not "ok", the error, and when the answer came) for the verdicts of this module.
    Run it with `"background": true`.
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
                done = round(time.time(), 3)
                answers[service].append([round(at, 3), status, degraded, error, done])
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
    for answer in answers:
        status = answer[1]
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


@judges_method(services={}, bad=[])
def answers_only_ok_or_unavailable(
    label: str = "watch", configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """
    Verdict: every `/readyz` answer `watch_services(label)` recorded was 200 or 503 — no other
    status (a 500 is a failure to degrade gracefully) and no failed connection (a crash or a
    hang). Figures: `services` {name: {status: count}}, `bad` (the first offending answers).
    """
    watched = _load(label, configuration)
    if watched is None:
        return _no_watch(label, services={}, bad=[])
    bad = [
        {"service": s, "at": at, "status": status, "error": error}
        for s, answers in watched["answers"].items()
        for at, status, _, error, *_ in answers
        if status not in (200, 503)
    ]
    counts = {s: _count(a) for s, a in watched["answers"].items()}
    empty = [s for s, a in watched["answers"].items() if not a]
    if bad:
        reason = f"{len(bad)} answers neither 200 nor 503, first: {bad[0]}"
    elif empty:
        reason = f"no answer recorded for {empty}"
    else:
        reason = f"every answer 200 or 503: {counts}"
    return logged(verdict(not bad and not empty, reason, services=counts, bad=bad[:20]))


def _window(start: str, end: str | None, configuration: Configuration) -> tuple[float, float]:
    begin = runs.MARKS.require(start, configuration)
    finish = runs.MARKS.require(end, configuration) if end else None
    return float(begin), float(finish) if finish else time.time()


@judges_method(services={}, window_s=None)
def degradation_reported(
    dependency: str,
    since: str,
    until: str,
    grace_s: float = None,
    label: str = "watch",
    services: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: every answer of each service (default: every watched one) asked from `grace_s`
    seconds after mark `since` (the fault, marked once it is in force) and answered before mark
    `until` (its removal) was 503 with `dependency` among the degraded checks, and there was at
    least one such answer per service. The grace defaults to the watch's own sampling interval:
    an answer asked in the same sampling period as the fault may have been on its way already;
    every later one was asked of a service whose dependency was dead, so a readiness that keeps
    saying 200 for a moment (a cached check) is caught. Figures: `services` {name: {"answers",
    "reported", "not_reported"}}, `window_s`, `grace_s`.
    """
    watched = _load(label, configuration)
    if watched is None:
        return _no_watch(label, services={}, window_s=None)
    try:
        begin, end = _window(since, until, configuration)
    except LookupError as exc:
        return verdict(False, str(exc), services={}, window_s=None)
    grace = float(watched.get("interval_s", 0.5) if grace_s in (None, "") else grace_s)
    begin += grace
    figures, problems = {}, []
    for service in services or sorted(watched["answers"]):
        # asked after the grace and answered before the fault's removal (a slow answer to a
        # question asked during the outage may describe the restored dependency)
        inside = [
            a
            for a in watched["answers"].get(service, [])
            if begin <= a[0] and (a[4] if len(a) > 4 else a[0]) <= end
        ]
        reported = [a for a in inside if a[1] == 503 and dependency in a[2]]
        figures[service] = {
            "answers": len(inside),
            "reported": len(reported),
            "not_reported": len(inside) - len(reported),
        }
        if not inside:
            problems.append(f"{service}: no answer between {since}+{grace:g}s and {until}")
        elif len(reported) < len(inside):
            wrong = next(a for a in inside if not (a[1] == 503 and dependency in a[2]))
            problems.append(
                f"{service}: {len(inside) - len(reported)} of {len(inside)} answers "
                f"did not report {dependency} degraded (e.g. HTTP {wrong[1]}, "
                f"degraded {wrong[2]})"
            )
    reason = "; ".join(problems) or (
        f"every service reported {dependency} degraded ({since} -> {until})"
    )
    return logged(
        verdict(
            not problems, reason, services=figures, window_s=round(end - begin, 3), grace_s=grace
        )
    )


@judges_method(services={}, relapses={}, limit_s=argument("limit_s", float), worst_s=None)
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
    return logged(
        verdict(ok, reason, services=figures, relapses=relapses, limit_s=limit_s, worst_s=worst)
    )

"""Participant cache verdicts (plan test 3 and the cache criterion of test 2).

The API's participant cache is observed from the outside only: its Prometheus counters
(`messaging_participant_cache_hits_total` / `_misses_total`, summed over the API's worker
processes by its multiprocess exposition) and what a k6 load saw request by request (its summary
counters and the `STALE_READ ...` lines `k6/participant_invalidation.js` logs for each stale read).
The invalidation delay itself is a histogram the API exposes; judge it with
`chaosmessaging.probes.metrics.histogram_quantile_within`.
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging import runs
from chaosmessaging.clients.prometheus import metrics_source, select
from chaosmessaging.probes.metrics import METRICS_SNAPSHOTS
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, argument, judges_method, logged, verdict

__all__ = [
    "cache_hit_ratio_at_least",
    "watch_hit_ratio_recovery",
    "hit_ratio_recovered",
    "no_stale_reads",
]

HITS = "messaging_participant_cache_hits_total"
MISSES = "messaging_participant_cache_misses_total"
_RECOVERIES = runs.Snapshots(
    "cache_recovery",
    "no hit-ratio measurement {label!r}: add watch_hit_ratio_recovery(label={label!r}) to the "
    "method",
)
_STALE_FIGURES = {
    "stale_reads": None,
    "reads_after_removal": None,
    "cross_process_reads": None,
    "member_denied": None,
    "examples": [],
}
_STALE_LINE = re.compile(
    r"STALE_READ (conversation=\S+ user=\S+ removed_at=\d+ read_at=\d+"
    r" removed_by_pid=\S+ read_pid=\S+)"
)


def _counts(source) -> tuple[float, float]:
    samples = source.samples(5.0)
    hits, misses = select(samples, HITS, {}), select(samples, MISSES, {})
    if hits is None or misses is None:
        raise ActivityFailed(
            f"{HITS} / {MISSES} are not exposed at {source.where}: is it the API of a "
            "stack with a participant cache?"
        )
    return hits, misses


@platform_applies
@judges_method(ratio=None, hits=None, misses=None, min_ratio=argument("min_ratio", float))
def cache_hit_ratio_at_least(
    since: str,
    min_ratio: float,
    service: str = "api",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: participant cache hits / (hits + misses), counted since the metrics snapshot
    `since` (`chaosmessaging.probes.metrics.snapshot_metrics`), is at least `min_ratio`
    (plan T2: 0.8). Figures: `ratio`, `hits`, `misses`, `min_ratio`. No lookup at all fails.
    Holds before the method ran.
    """
    min_ratio = float(min_ratio)
    figures = {"ratio": None, "hits": None, "misses": None, "min_ratio": min_ratio}
    snapshot = METRICS_SNAPSHOTS.get(since, configuration)
    if snapshot is None:
        return verdict(False, METRICS_SNAPSHOTS.missing_reason(since), **figures)
    before = [(n, dict(lb), float(v)) for n, lb, v in snapshot["samples"]]
    hits, misses = _counts(metrics_source(service, url, configuration, secrets))
    figures["hits"] = hits - (select(before, HITS, {}) or 0.0)
    figures["misses"] = misses - (select(before, MISSES, {}) or 0.0)
    lookups = figures["hits"] + figures["misses"]
    if lookups <= 0:
        return verdict(
            False, f"no participant cache lookup since {since!r}: nothing to judge", **figures
        )
    figures["ratio"] = figures["hits"] / lookups
    reason = (
        f"participant cache hit ratio since {since!r}: {figures['hits']:g} / {lookups:g} = "
        f"{figures['ratio']:.3f} (need >= {min_ratio:g})"
    )
    return logged(verdict(figures["ratio"] >= min_ratio, reason, **figures))


def watch_hit_ratio_recovery(
    label: str,
    after_s: float,
    within_s: float,
    min_ratio: float,
    window_s: float = 5.0,
    service: str = "api",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Measure how long the participant cache's hit ratio takes to come back: wait `after_s`
    seconds (until the disturbance, e.g. the participant changes of a load, has stopped), then
    compute the hit ratio over consecutive windows of `window_s` seconds until one reaches
    `min_ratio` or `within_s` seconds have passed. Records the result under `label` for
    `hit_ratio_recovered` and returns it: ``{"recovered_after_s": seconds or None, "windows":
    [{"at_s", "ratio", "lookups"}...], "min_ratio", "within_s"}`` (time counted from the end of
    the wait to the end of the first window at or above `min_ratio`). Never fails by itself.
    """
    source = metrics_source(service, url, configuration, secrets)
    time.sleep(max(0.0, float(after_s)))
    started = time.monotonic()
    windows, recovered = [], None
    hits, misses = _counts(source)
    while time.monotonic() - started < float(within_s):
        time.sleep(float(window_s))
        now_hits, now_misses = _counts(source)
        lookups = (now_hits - hits) + (now_misses - misses)
        ratio = (now_hits - hits) / lookups if lookups > 0 else None
        at = round(time.monotonic() - started, 3)
        windows.append({"at_s": at, "ratio": ratio, "lookups": lookups})
        hits, misses = now_hits, now_misses
        if ratio is not None and ratio >= float(min_ratio):
            recovered = at
            break
    result = {
        "recovered_after_s": recovered,
        "windows": windows,
        "min_ratio": float(min_ratio),
        "within_s": float(within_s),
    }
    _RECOVERIES.record(label, result, configuration)
    state = "back above" if recovered is not None else "not back above"
    logger.info(
        f"participant cache hit ratio {state} {float(min_ratio):g} after "
        f"{recovered if recovered is not None else within_s}s"
    )
    return result


@platform_applies
@judges_method(recovered_after_s=None, within_s=argument("within_s", float))
def hit_ratio_recovered(
    label: str, within_s: float, configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """
    Verdict: the hit ratio watched by `watch_hit_ratio_recovery(label=...)` was back at its
    minimum within `within_s` seconds (plan T3: above 90 % within 1 minute). Figures:
    `recovered_after_s`, `within_s`, `min_ratio`, `windows`. Holds before the method ran;
    after it, a missing measurement fails.
    """
    figures = {"recovered_after_s": None, "within_s": float(within_s)}
    fact = _RECOVERIES.get(label, configuration)
    if fact is None:
        return verdict(False, _RECOVERIES.missing_reason(label), **figures)
    recovered = fact["recovered_after_s"]
    figures.update(
        recovered_after_s=recovered, min_ratio=fact["min_ratio"], windows=fact["windows"]
    )
    ok = recovered is not None and recovered <= float(within_s)
    reason = (
        f"participant cache hit ratio back at >= {fact['min_ratio']:g} after {recovered}s "
        f"(limit {float(within_s):g}s)"
        if recovered is not None
        else f"participant cache hit ratio never got back to >= {fact['min_ratio']:g} within "
        f"{fact['within_s']:g}s"
    )
    return verdict(ok, reason, **figures)


def _load_summary(label: str, configuration: Configuration) -> tuple[dict, dict] | None:
    loads = runs.loads(home_of(configuration), label)
    if not loads:
        return None
    info = loads[-1]
    path = Path(info["summary_path"])
    if not path.exists():
        raise ActivityFailed(
            f"the k6 summary of load {label!r} is missing ({path}): did the load "
            "finish? wait_for_load before judging it"
        )
    return info, json.loads(path.read_text())


def _count(metrics: dict, name: str) -> float:
    return float(metrics.get(name, {}).get("count", 0))


def _cross_process_measured(configuration: Configuration, secrets: Secrets) -> str | None:
    """None when the platform file names the header saying which process answered a read
    (`served_by_header`) on both the removal's and the read's service; else why not."""
    from chaosmessaging.platform import load_platform

    platform = load_platform(configuration=configuration, secrets=secrets)
    read = platform.operation("participants.list")
    if read is None or not read.forbidden:
        read = platform.operation("conversations.get")
    remove = platform.operation("participants.remove")
    for op in (read, remove):
        service = platform.services.get(op.service) if op is not None else None
        if service is None or not service.served_by_header:
            name = op.service if op is not None else "?"
            return (
                f"services.{name} of '{platform.name}' names no served_by_header, so no read is "
                "known to have crossed processes"
            )
    return None


@platform_applies
@judges_method(**_STALE_FIGURES)
def no_stale_reads(
    label: str, max_examples: int = 10, configuration: Configuration = None, secrets: Secrets = None
) -> Verdict:
    """
    Verdict: no read judged after a participant removal was answered from a stale cache, in
    the k6 load `label` (`k6/participant_invalidation.js`): each member read that started at
    least the invalidation budget after its removal was acknowledged must be refused (403).
    Also requires that reads were judged at all and that some were answered by another API
    process than the one that acknowledged the removal (else the invalidation never had to
    cross processes), when the platform file names the header that says which process answered
    (`served_by_header`; without it that part is "n/a" in the figure `cross_process`).
    Figures: `stale_reads`, `reads_after_removal`, `cross_process_reads`, `member_denied`,
    `examples` (conversation, user, removal and read times in ms, pids).
    """
    figures = copy.deepcopy(_STALE_FIGURES)
    found = _load_summary(label, configuration)
    if found is None:
        return verdict(
            False, f"no load {label!r} was recorded in this run: nothing was judged", **figures
        )
    info, summary = found
    metrics = summary.get("metrics", summary)
    for key in ("stale_reads", "reads_after_removal", "cross_process_reads", "member_denied"):
        figures[key] = _count(metrics, key)
    log = info.get("log_path")
    if log and Path(log).exists() and figures["stale_reads"]:
        text = Path(log).read_text(errors="replace")
        figures["examples"] = _STALE_LINE.findall(text)[: int(max_examples)]
    if figures["reads_after_removal"] <= 0:
        return verdict(
            False,
            "no read after a removal was judged: the load did not run its participant changes",
            **figures,
        )
    if figures["stale_reads"] > 0:
        return verdict(
            False,
            f"{figures['stale_reads']:g} of {figures['reads_after_removal']:g} "
            "reads after a removal were served a stale participant list, e.g. "
            f"{figures['examples'][:3]}",
            **figures,
        )
    across = _cross_process_measured(configuration, secrets)
    if across is not None:  # the platform cannot say which process answered: judged without it
        figures["cross_process"] = f"n/a: {across}"
    elif figures["cross_process_reads"] <= 0:
        return verdict(
            False,
            "no judged read reached another API process than the removal: "
            "the invalidation was never tested across processes",
            **figures,
        )
    if figures["member_denied"] > 0:
        return verdict(
            False,
            f"{figures['member_denied']:g} reads by a current participant were refused",
            **figures,
        )
    return verdict(
        True,
        f"none of {figures['reads_after_removal']:g} reads after a removal was "
        f"stale ({figures['cross_process_reads']:g} answered by another process)",
        **figures,
    )

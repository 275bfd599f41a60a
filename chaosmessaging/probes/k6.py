"""k6 probes: read the JSON a load run wrote with `k6 run --summary-export <path>`.

In that format (checked against k6 v1.1) each metric is a dict of statistics (`count`, `rate`,
`avg`, `p(95)`, `value`, ...) and, when the script declares thresholds on it,
`"thresholds": {"p(95)<100": false}` where **true means the threshold was crossed** (failed).
Percentiles other than p(90)/p(95) exist only if the run set `--summary-trend-stats`.
"""

from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.clients.k6raw import combined
from chaosmessaging.clients.k6summary import summary_metrics, summary_stat
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import (
    Verdict,
    argument,
    held_before_method,
    judges_method,
    logged,
    verdict,
)

__all__ = ["k6_combined_thresholds", "k6_count_at_most", "k6_metric", "k6_thresholds"]

_DURATION = "http_req_duration"


def k6_thresholds(
    summary_path: str = None,
    label: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Without `summary_path`, judges the loads of the current experiment run (all, or the one
    with `label`, see `chaosmessaging.runs`): passed when every one passed, with each load's
    figures under `loads`. Before the method ran there is nothing to judge (holds, no loads);
    after it, no load is a failure.

    Verdict of a k6 run's thresholds and its key figures, as
    `{"ok": bool, "reason", "failed": ["http_req_duration: p(95)<100", ...], "metrics": {...}}`
    where `metrics` holds `http_reqs` and `http_reqs_rate`, `http_req_failed_rate`,
    `p95_ms` and `p99_ms` of `http_req_duration` (null when not exported), `iterations` and
    `dropped_iterations`. Raises an error when the summary file is missing or unreadable.
    """
    if summary_path is None:
        return _run_thresholds(label, configuration)
    metrics = summary_metrics(summary_path)
    failed = sorted(
        f"{name}: {expression}"
        for name, stats in metrics.items()
        for expression, crossed in (stats.get("thresholds") or {}).items()
        if crossed
    )
    if failed:
        logger.warning(f"k6 thresholds crossed in {summary_path}: {failed}")
    duration = metrics.get(_DURATION, {})
    figures = {
        "http_reqs": metrics.get("http_reqs", {}).get("count", 0),
        "http_reqs_rate": metrics.get("http_reqs", {}).get("rate", 0.0),
        "http_req_failed_rate": metrics.get("http_req_failed", {}).get("value", 0.0),
        "p95_ms": duration.get("p(95)"),
        "p99_ms": duration.get("p(99)"),
        "iterations": metrics.get("iterations", {}).get("count", 0),
        "dropped_iterations": metrics.get("dropped_iterations", {}).get("count", 0),
    }
    reason = (
        f"thresholds crossed: {', '.join(failed)}"
        if failed
        else f"every threshold held ({figures['http_reqs']} requests)"
    )
    return verdict(not failed, reason, failed=failed, metrics=figures)


def _run_thresholds(label: str | None, configuration: Configuration) -> Verdict:
    home = home_of(configuration)
    loads = runs.loads(home, label)
    if not loads:
        if held := held_before_method(configuration, failed=[], loads={}):
            return held
        reason = "no load was recorded in this run: nothing proves its error rate"
        logger.warning(reason)
        return verdict(False, reason, failed=[], loads={})
    verdicts = {
        load.get("label", load["run_id"]): k6_thresholds(load["summary_path"]) for load in loads
    }
    failed = [f"{name}: {f}" for name, v in verdicts.items() for f in v["failed"]]
    reason = (
        f"thresholds crossed: {', '.join(failed)}"
        if failed
        else f"every threshold of {len(verdicts)} load(s) held"
    )
    return verdict(not failed, reason, failed=failed, loads=verdicts)


def k6_combined_thresholds(
    p95_ms: float = None,
    max_error_rate: float = None,
    labels: list = None,
    raw_paths: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict of a load split across runners (k6 execution segments, `start_load(segment=...)`),
    judged on the merged raw samples of every runner, as one k6 run would have judged the whole
    load: p95 of `http_req_duration` over all requests at most `p95_ms`, `http_req_failed` rate
    at most `max_error_rate` (either may be omitted). Reads the raw files of this run's loads
    (those in `labels`, or every load that wrote one) or the given `raw_paths` (e.g. collected
    from k6-operator runner pods). Figures: `p95_ms`, `p99_ms`, `http_reqs`,
    `http_req_failed_rate`, `runners` (each runner's own figures) and `mean_runner_p95_ms`
    (what averaging the runners' p95s would claim; not a percentile, never judged).
    """
    figures = {"p95_ms": None, "http_reqs": 0, "http_req_failed_rate": None, "runners": []}
    if raw_paths is None:
        loads = runs.loads(home_of(configuration))
        raw_paths = [
            load["raw_path"]
            for load in loads
            if load.get("raw_path") and (labels is None or load.get("label") in labels)
        ]
        if not raw_paths:
            if held := held_before_method(configuration, **figures):
                return held
            return verdict(
                False,
                "no load of this run wrote raw samples: start each runner's load with a "
                "segment (or raw_output: true)",
                **figures,
            )
    merged = combined(raw_paths)
    if not merged["http_reqs"]:
        return verdict(
            False, f"no request in the raw samples of {len(raw_paths)} runner(s)", **merged
        )
    breaches = []
    if p95_ms is not None and merged["p95_ms"] > float(p95_ms):
        breaches.append(f"p95 {merged['p95_ms']:.1f} ms > {float(p95_ms):g} ms")
    if max_error_rate is not None and merged["http_req_failed_rate"] > float(max_error_rate):
        breaches.append(
            f"error rate {merged['http_req_failed_rate']:.4f} > {float(max_error_rate):g}"
        )
    reason = (
        f"{len(merged['runners'])} runners, {merged['http_reqs']} requests merged: p95 "
        f"{merged['p95_ms']:.1f} ms, error rate {merged['http_req_failed_rate']:.4f}"
        + (f"; breached: {', '.join(breaches)}" if breaches else "")
    )
    (logger.warning if breaches else logger.info)(reason)
    return verdict(not breaches, reason, **merged)


def k6_metric(
    summary_path: str,
    metric: str,
    stat: str = "count",
    default: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """
    One statistic of one metric of a k6 run, e.g. `metric="messages_accepted", stat="count"`
    or `metric="http_req_duration", stat="p(95)"` (milliseconds). A metric the run never
    recorded (k6 omits those) gives `default` when set, otherwise an error.
    """
    return summary_stat(summary_path, metric, stat, default)


@judges_method(count=None, at_most=argument("at_most", float), loads={})
def k6_count_at_most(
    metric: str,
    at_most: float = 0,
    label: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: the count of k6 counter `metric` summed over this run's loads (all, or the one
    with `label`) is at most `at_most`, e.g. `server_errors` (answers 5xx other than 503, or
    no answer at all: the scripts count those) must stay 0 through an outage. A load that never
    counted the metric counts 0 (k6 omits unused metrics). Figures: `count`, `at_most`,
    `loads` {label: count}. Holds before the method; after it, no load fails.
    """
    at_most = float(at_most)
    loads = runs.loads(home_of(configuration), label)
    if not loads:
        return verdict(
            False,
            "no load was recorded in this run: nothing to count",
            count=None,
            at_most=at_most,
            loads={},
        )
    counts = {
        load.get("label", load["run_id"]): k6_metric(
            load["summary_path"], metric, "count", default=0
        )
        for load in loads
    }
    total = sum(counts.values())
    reason = f"k6 {metric}: {total:g} over {len(counts)} load(s) (at most {at_most:g})"
    return logged(verdict(total <= at_most, reason, count=total, at_most=at_most, loads=counts))

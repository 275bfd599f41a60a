"""k6 end-of-test summaries (`k6 run --summary-export`): one statistic of one metric.

Read by the k6 verdicts (`chaosmessaging.probes.k6`) and by the server-side ledger accounting
(`chaosmessaging.evidence.ledger`), which compares the k6 count of accepted messages with the
platform's own record.
"""

from __future__ import annotations

import json
from pathlib import Path

from chaoslib.exceptions import ActivityFailed

__all__ = ["summary_metrics", "summary_stat"]


def summary_metrics(summary_path: str) -> dict:
    """The `metrics` object of the k6 summary at `summary_path` (an actionable error when it is
    missing, unreadable or not a summary)."""
    path = Path(summary_path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ActivityFailed(
            f"no k6 summary at {path}: the load may not have finished (or "
            "was started without --summary-export to this path)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ActivityFailed(
            f"cannot read k6 summary {path}: {error}; the load may still be writing it"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("metrics"), dict):
        raise ActivityFailed(f"{path} is not a k6 --summary-export file (no 'metrics' object)")
    return document["metrics"]


def summary_stat(
    summary_path: str, metric: str, stat: str = "count", default: float | None = None
) -> float:
    """One statistic of one metric of a k6 run (`default` when the run never recorded the
    metric and a default is given; k6 omits such metrics)."""
    metrics = summary_metrics(summary_path)
    stats = metrics.get(metric)
    if stats is None:
        if default is not None:
            return float(default)
        raise ActivityFailed(
            f"k6 summary {summary_path} has no metric '{metric}' (it has "
            f"{sorted(metrics)}); k6 omits metrics that recorded nothing"
        )
    if stat not in stats or stat == "thresholds":
        raise ActivityFailed(
            f"k6 metric '{metric}' has no statistic '{stat}' (it has "
            f"{sorted(k for k in stats if k != 'thresholds')}); for more "
            "percentiles run k6 with --summary-trend-stats"
        )
    return float(stats[stat])

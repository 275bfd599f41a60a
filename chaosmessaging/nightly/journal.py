"""Read a Chaos Toolkit journal: the run's verdict and every criterion with its figures.

Verdict probes answer ``{"ok", "reason", ...figures}`` (`chaosmessaging.verdicts`); a criterion
here is one steady-state probe of the hypothesis' last pass, with its measured figures and the
thresholds it was judged against (figures named like a limit), so the dashboard can show
"measured vs threshold" without knowing each probe.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["criteria", "verdict_of", "THRESHOLD_NAME"]

#: figure names that state a limit rather than a measurement
THRESHOLD_NAME = re.compile(
    r"(limit|threshold|max_|min_|_max$|_min$|expect|tolerance|within|"
    r"allowed|budget|factor|slack|ceiling|floor|needs)",
    re.IGNORECASE,
)


def _numbers(output: Any) -> dict[str, Any]:
    if not isinstance(output, dict):
        return {}
    return {
        k: v
        for k, v in output.items()
        if k not in ("ok", "reason", "applies")
        and isinstance(v, int | float | bool | str)
        and not (isinstance(v, str) and len(v) > 80)
    }


def criteria(journal: dict) -> list[dict]:
    """One entry per steady-state probe (the hypothesis' last pass, else its first):
    ``{"name", "ok", "applies", "reason", "measured": {...}, "threshold": {...}, "tolerance",
    "phase"}``; `applies` is False for a criterion that does not apply to the platform
    (`verdicts.not_applicable`: reported "n/a" with its reason, never as passed or failed)."""
    states = journal.get("steady_states") or {}
    out = []
    for phase in ("after", "before"):
        probes = (states.get(phase) or {}).get("probes") or []
        if not probes:
            continue
        for probe in probes:
            activity = probe.get("activity") or {}
            output = probe.get("output")
            figures = _numbers(output)
            reason = output.get("reason", "") if isinstance(output, dict) else ""
            if probe.get("status") == "failed":
                reason = reason or str(probe.get("exception", ["activity failed"])[-1]).strip()
            out.append(
                {
                    "name": activity.get("name", "?"),
                    "ok": bool(probe.get("tolerance_met")),
                    "applies": not (isinstance(output, dict) and output.get("applies") is False),
                    "reason": reason,
                    "measured": {k: v for k, v in figures.items() if not THRESHOLD_NAME.search(k)},
                    "threshold": {k: v for k, v in figures.items() if THRESHOLD_NAME.search(k)},
                    "tolerance": activity.get("tolerance"),
                    "phase": phase,
                }
            )
        break
    return out


def verdict_of(journal: dict, exit_code: int | None) -> tuple[bool, str]:
    """(passed, reason): passed when chaos exited 0, the run completed, did not deviate and
    every criterion held (plain Chaos Toolkit exits 0 with status "completed" when the
    hypothesis already failed before the method)."""
    status, deviated = journal.get("status"), journal.get("deviated")
    failed = [c["name"] for c in criteria(journal) if not c["ok"]]
    if exit_code == 0 and status == "completed" and not deviated and not failed:
        return True, ""
    if failed:
        return False, "criteria not met: " + ", ".join(failed)
    if status in ("aborted", "interrupted"):
        return False, f"run {status}"
    failing = [
        r.get("activity", {}).get("name")
        for r in journal.get("run") or []
        if r.get("status") == "failed"
    ]
    if failing:
        return False, "failed activities: " + ", ".join(n or "?" for n in failing)
    return False, f"chaos exited {exit_code} (journal status {status}, deviated {deviated})"

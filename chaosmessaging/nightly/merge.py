"""Merge the CI matrix's per-experiment results into one night, then report it.

Each matrix job runs `chaosmessaging nightly --only NAME --results <part>`: a one-experiment
night. This joins the parts' `suite.json` and folders into `<night>/`, then does what the
`nightly` command does after a run: history, dashboard, alerts. Exit code: the night's (1 when a
blocking experiment failed).

    python -m chaosmessaging.nightly.merge PARTS_DIR NIGHT_DIR --profile nightly \
        --history reports/nightly/history.json [--coverage coverage.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from chaosmessaging.nightly import alerts, dashboard, history
from chaosmessaging.util import atomic_write_json

__all__ = ["merge", "main"]


def merge(parts: Path, night: Path, profile: str) -> dict:
    """Copy every part's experiment folders into `night` and write the joined suite.json."""
    night.mkdir(parents=True, exist_ok=True)
    suites = [json.loads(p.read_text()) for p in sorted(parts.rglob("suite.json"))]
    experiments = []
    for suite_path, suite in zip(sorted(parts.rglob("suite.json")), suites):
        for exp in suite["experiments"]:
            src = suite_path.parent / exp["name"]
            if src.is_dir():
                shutil.copytree(src, night / exp["name"], dirs_exist_ok=True)
            experiments.append(exp)
    blocking = [e["name"] for e in experiments if e["blocking"] and e["status"] != "passed"]
    data = {
        "night": night.name,
        "profile": profile,
        "results_dir": str(night.resolve()),
        "started_at": min((s["started_at"] for s in suites), default=0),
        "ended_at": max((s.get("ended_at") or 0 for s in suites), default=0),
        "interrupted": any(s.get("interrupted") for s in suites),
        "git_sha": next((s.get("git_sha") for s in suites if s.get("git_sha")), None),
        "experiments": experiments,
        "blocking_failures": blocking,
        "exit_code": 1 if blocking else 0,
    }
    atomic_write_json(night / "suite.json", data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", type=Path)
    parser.add_argument("night", type=Path)
    parser.add_argument("--profile", default="nightly")
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--coverage", type=Path, default=None)
    args = parser.parse_args(argv)
    suite = merge(args.parts, args.night, args.profile)
    figures = history.night_figures(args.night)
    if args.coverage and args.coverage.exists():
        gate = history.coverage_gate(args.coverage)
        figures["suite.coverage_pct"] = gate["measured_pct"]
        suite["exit_code"] = history.apply_gate(args.night, gate)
    hist = history.append(args.history, suite["night"], args.profile, figures, suite["git_sha"])
    findings = history.judge(hist, args.profile)
    print(dashboard.render_night(args.night, args.history))
    print(dashboard.render_index(args.night.parent, args.history, args.profile))
    if alerts.channels():
        url = os.environ.get("CHAOSMESSAGING_DASHBOARD_URL")
        for text in (
            alerts.critical_failures(suite, url),
            alerts.regressions(findings, suite["night"], url),
            alerts.daily_summary(suite, findings, url),
        ):
            if text:
                alerts.send(text)
    return suite["exit_code"]


if __name__ == "__main__":
    sys.exit(main())

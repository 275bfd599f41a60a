"""Each night's key figures, appended to a history that outlives CI runs (plan test 15).

`night_figures` reads a night's results folder: per experiment its k6 latencies (p50/p95/p99)
and throughput per load, error rate, recovery times (run facts ``recovery:*``), CPU and peak
memory per service and peak Redis / PostgreSQL connections (the suite's own samples), duration
and pass/fail. `append` adds them to
`history.json` (one entry per night and profile; a re-run replaces that night's entry) and
`judge` runs `regressions.detect` on every metric of the profile's history.

Where the history lives between CI runs: a branch (`nightly-history`), not an artifact.
Artifacts expire (90 days at most) and reading a previous run's artifact needs a token and a
run-id lookup; a one-file branch is durable, diffable and readable by anyone. The workflow checks
the branch out, runs the suite with `--history`, and pushes the updated file back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from chaosmessaging.nightly.regressions import Finding, detect
from chaosmessaging.util import atomic_write_json

__all__ = [
    "night_figures",
    "append",
    "load",
    "judge",
    "series",
    "coverage_gate",
    "apply_gate",
    "COVERAGE_GATE",
]

#: the plan's coverage target ("Coverage >= 92% maintained")
COVERAGE_GATE = 92.0


def _k6_figures(path: Path) -> dict[str, float]:
    metrics = json.loads(path.read_text()).get("metrics", {})
    duration = metrics.get("http_req_duration", {})
    out = {}
    for key, stat in (("p50_ms", "med"), ("p95_ms", "p(95)"), ("p99_ms", "p(99)")):
        if duration.get(stat) is not None:
            out[key] = round(float(duration[stat]), 3)
    if metrics.get("http_reqs", {}).get("rate") is not None:
        out["throughput_rps"] = round(float(metrics["http_reqs"]["rate"]), 2)
    if metrics.get("http_req_failed", {}).get("value") is not None:
        out["error_rate"] = float(metrics["http_req_failed"]["value"])
    return out


def _resources(samples: dict) -> dict[str, float]:
    out = {}
    t = samples.get("t") or []
    for key, values in ((samples.get("services") or {}).get("connections") or {}).items():
        present = [v for v in values if v is not None]
        if present:
            out[f"{key}_max"] = max(present)
    for service, series in (samples.get("services") or {}).items():
        rss = [v for v in series.get("process_resident_memory_bytes", []) if v is not None]
        if rss:
            out[f"{service}.memory_mb"] = round(max(rss) / 2**20, 1)
        cpu = [
            (ts, v)
            for ts, v in zip(t, series.get("process_cpu_seconds_total", []))
            if v is not None
        ]
        if len(cpu) >= 2 and cpu[-1][0] > cpu[0][0] and cpu[-1][1] >= cpu[0][1]:
            out[f"{service}.cpu_pct"] = round(
                100 * (cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0]), 1
            )
    return out


def night_figures(results_dir: str | Path) -> dict[str, float]:
    """``{"<experiment>.<figure>": value}`` for one night (see the module docstring)."""
    results_dir = Path(results_dir)
    suite = json.loads((results_dir / "suite.json").read_text())
    figures: dict[str, float] = {}
    for exp in suite.get("experiments", []):
        name, folder = exp["name"], results_dir / exp["name"]
        if exp.get("status") == "not run":
            continue
        figures[f"{name}.passed"] = 1.0 if exp.get("status") == "passed" else 0.0
        if exp.get("duration_s"):
            figures[f"{name}.duration_s"] = exp["duration_s"]
        for summary in sorted(folder.glob("k6/**/*.json")):
            if summary.name.endswith(".run.json"):
                continue
            try:
                for key, value in _k6_figures(summary).items():
                    figures[f"{name}.{summary.stem}.{key}"] = value
            except (ValueError, OSError):
                continue
        for facts in sorted(folder.glob("facts/*.json")):
            doc = json.loads(facts.read_text())
            for key, value in doc.items() if isinstance(doc, dict) else ():
                if (
                    key.startswith("recovery:")
                    and isinstance(value, dict)
                    and value.get("seconds") is not None
                ):
                    figures[f"{name}.{key.replace(':', '_')}_s"] = value["seconds"]
        samples = folder / "stack-samples.json"
        if samples.exists():
            for key, value in _resources(json.loads(samples.read_text())).items():
                figures[f"{name}.{key}"] = value
    return figures


def load(path: str | Path) -> dict:
    path = Path(path)
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"the history file {path} is not valid JSON ({exc})") from None
    return {"version": 1, "nights": []}


def append(
    path: str | Path,
    night: str,
    profile: str,
    figures: dict[str, float],
    git_sha: str | None = None,
) -> dict:
    """Add (or replace) this night's figures in the history file; returns the history."""
    history = load(path)
    history["nights"] = [
        n for n in history["nights"] if not (n["night"] == night and n["profile"] == profile)
    ]
    history["nights"].append(
        {
            "night": night,
            "profile": profile,
            "git_sha": git_sha,
            "recorded_at": time.time(),
            "figures": figures,
        }
    )
    history["nights"].sort(key=lambda n: n["night"])
    atomic_write_json(path, history)
    return history


def series(history: dict, profile: str) -> tuple[list[str], dict[str, list[float | None]]]:
    """Nights of `profile` (oldest first) and each metric's values on them (None: not run)."""
    nights = [n for n in history.get("nights", []) if n["profile"] == profile]
    names = sorted({k for n in nights for k in n["figures"]})
    return ([n["night"] for n in nights], {k: [n["figures"].get(k) for n in nights] for k in names})


def judge(history: dict, profile: str) -> list[Finding]:
    """A trend finding per metric (pass/fail flags are charted, not judged as trends)."""
    nights, values = series(history, profile)
    return [
        detect(metric, vals, nights)
        for metric, vals in values.items()
        if not metric.endswith(".passed")
    ]


def coverage_gate(coverage_json: str | Path, threshold: float = COVERAGE_GATE) -> dict:
    """The suite's test coverage (pytest-cov ``--cov-report=json``) against the plan's gate."""
    pct = float(json.loads(Path(coverage_json).read_text())["totals"]["percent_covered"])
    return {
        "name": "coverage",
        "measured_pct": round(pct, 2),
        "threshold_pct": threshold,
        "ok": pct >= threshold,
        "reason": f"test coverage {pct:.1f}% {'>=' if pct >= threshold else '<'} "
        f"{threshold:g}% (the plan's gate)",
    }


def apply_gate(results_dir: str | Path, gate: dict) -> int:
    """Record a suite-level gate in the night's suite.json; a failed gate fails the night.
    Returns the night's exit code."""
    path = Path(results_dir) / "suite.json"
    suite = json.loads(path.read_text())
    suite["gates"] = [g for g in suite.get("gates", []) if g["name"] != gate["name"]] + [gate]
    if not gate["ok"] and suite.get("exit_code") == 0:
        suite["exit_code"] = 1
    atomic_write_json(path, suite)
    return suite["exit_code"]

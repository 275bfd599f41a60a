"""The metric-samples file of a run: written by `actions.sampling.sample_metrics`, read by the
verdicts in `probes.trends` (and the nightly dashboard).

`<home>/runs/<run id>.samples-<label>.json` holds `{"label", "interval_s", "duration_s",
"started_at", "ended_at", "interrupted", "errors", "services"}` where `services` maps a service
name to `{"t": [seconds into the sampling], <metric>: [value or null], ...}`.
"""

from __future__ import annotations

import json
from pathlib import Path

from chaosmessaging import runs
from chaosmessaging.util import stack_home

__all__ = ["samples_path", "read_samples"]


def samples_path(label: str, home: str | None = None) -> Path:
    """Where the current run's samples labelled `label` are (or will be) recorded."""
    return stack_home(home) / "runs" / f"{runs.current_run_id(home)}.samples-{label}.json"


def read_samples(label: str, home: str | None = None) -> dict | None:
    """The current run's samples labelled `label`, or None when none were recorded."""
    path = samples_path(label, home)
    return json.loads(path.read_text()) if path.exists() else None

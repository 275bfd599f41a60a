"""Facts of the current experiment run, shared between its activities.

Chaos Toolkit does not pass one activity's result to the next, yet a verdict needs them: the run
id the load tagged its messages with, the entries pending when the consumer was killed, the
recovery time measured after the restart. Each run writes them to `<home>/runs/<run_id>.json`;
the current run id lives in the `CHAOSMESSAGING_RUN_ID` environment variable of the `chaos`
process (set by the first activity or control that needs it), so a later steady-state probe in the
same run finds them. Nothing secret goes here.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmessaging.util import atomic_write_json, home_of, stack_home

__all__ = [
    "current_run_id",
    "new_run",
    "record",
    "facts",
    "fact",
    "method_started",
    "loads",
    "message_prefix",
    "Snapshots",
    "MissingSnapshot",
    "MARKS",
]

ENV = "CHAOSMESSAGING_RUN_ID"


def new_run(home: str | None = None) -> str:
    """Start a new run: a fresh id, exported for every later activity of this process."""
    run_id = f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    os.environ[ENV] = run_id
    record("started_at", time.time(), home=home)
    return run_id


def current_run_id(home: str | None = None) -> str:
    """The current run id, starting a run if none is active in this process."""
    return os.environ.get(ENV) or new_run(home)


def _path(run_id: str, home: str | None) -> Path:
    return stack_home(home) / "runs" / f"{run_id}.json"


def facts(run_id: str | None = None, home: str | None = None) -> dict[str, Any]:
    """Everything recorded for the run (empty dict if nothing yet)."""
    path = _path(run_id or current_run_id(home), home)
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def fact(key: str, default: Any = None, run_id: str | None = None, home: str | None = None) -> Any:
    return facts(run_id, home).get(key, default)


def record(key: str, value: Any, run_id: str | None = None, home: str | None = None) -> None:
    """Store one fact of the run (atomically replaces the file)."""
    run_id = run_id or current_run_id(home)
    path = _path(run_id, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    # activities may record from several threads (background ones) at once: one writer at a time
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"run_id": run_id}
        data[key] = value
        atomic_write_json(path, data)


def method_started(home: str | None = None) -> bool:
    """True once the method's first activity marked it (see `probes.marks.mark`).

    Verdicts about a fault hold trivially in the hypothesis' first pass (before the method) and
    must have their evidence after it."""
    return fact(MARKS.key("method"), home=home) is not None


def loads(home: str | None = None, label: str | None = None) -> list[dict]:
    """Load runs started in this run (all, or the one with `label`), in start order."""
    found = [v for k, v in facts(home=home).items() if k.startswith("load:")]
    if label is not None:
        found = [v for v in found if v.get("label") == label]
    return sorted(found, key=lambda v: v.get("started_at", 0))


def message_prefix(label: str | None = None, home: str | None = None) -> str:
    """The `client_msg_id` prefix of this run's messages (one load, or all with no label).

    A load labelled L of run R tags its messages `R/L:...`."""
    run_id = current_run_id(home)
    return f"{run_id}/{label}:" if label else f"{run_id}/"


class MissingSnapshot(LookupError):
    """A verdict asked for a snapshot the method did not record (the message names the label and
    the activity that records it)."""


@dataclass(frozen=True)
class Snapshots:
    """Record now, judge later: the labelled snapshots of one kind a run's method records and its
    verdicts read back, each the fact `<kind>:<label>` (the keys the nightly collector, the
    report and other activities read, e.g. `mark:method`, `pending:at_kill`, `recovery:*`).

    `missing` is the sentence for an absent snapshot: `{label!r}` is the label asked for, other
    fields are given to `missing_reason`/`require`. One instance per kind, beside its recorder::

        IDENTITIES = Snapshots("identities", "no identity snapshot {label!r}: add ...")
        IDENTITIES.record("before", seen, configuration)
        before = IDENTITIES.require("before", configuration)  # or MissingSnapshot
    """

    kind: str
    missing: str

    def key(self, label: str) -> str:
        return f"{self.kind}:{label}"

    def record(self, label: str, value: Any, configuration: dict | None = None) -> Any:
        """Store `value` as this run's snapshot `label`; return it."""
        record(self.key(label), value, home=home_of(configuration))
        return value

    def get(self, label: str, configuration: dict | None = None, default: Any = None) -> Any:
        """The snapshot `label` of this run, or `default` when it was not recorded."""
        return fact(self.key(label), default, home=home_of(configuration))

    def missing_reason(self, label: str, **fields: Any) -> str:
        """The sentence saying snapshot `label` is missing and what records it."""
        return self.missing.format(label=label, **fields)

    def require(self, label: str, configuration: dict | None = None, **fields: Any) -> Any:
        """The snapshot `label`; `MissingSnapshot` (naming it) when it was not recorded."""
        value = self.get(label, configuration)
        if value is None:
            raise MissingSnapshot(self.missing_reason(label, **fields))
        return value


#: instants of the run (`probes.marks.mark`): "method" (the method started), a fault's removal
MARKS = Snapshots("mark", "mark {label!r} was not set: add mark(label={label!r}) to the method")

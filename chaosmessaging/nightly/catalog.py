"""Which experiments the nightly suite runs, and what the plan says about each.

Experiments are discovered, never listed: every `experiments/*.json` is one, so an experiment added
later runs (and gets its CI matrix job) with no edit here. What the plan adds on top is keyed by
file name (DESIGN.md §5 names one file per plan test):

- the plan test number (T1..T15), shown on the dashboard;
- `continue-on-error`: the plan's workflow runs the chaos tests T8-T11 in a job marked
  ``continue-on-error: true`` — they are reported (and alert) but never fail the night;
- `critical`: the plan's alerting section sends failure alerts for T1, T4, T8 and T11.

An experiment may also opt in by tag: ``"tags": ["continue-on-error"]`` or ``["critical"]``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "Entry",
    "PLAN_TESTS",
    "CONTINUE_ON_ERROR",
    "CRITICAL",
    "discover",
    "experiments_dir",
    "profile_values",
]

#: experiment file name -> plan test (DESIGN.md §5)
PLAN_TESTS = {
    "message_soak": "T1",
    "conversation_stress": "T2",
    "participant_invalidation": "T3",
    "mixed_load": "T4",
    "large_payload": "T5",
    "sustained_login": "T6",
    "multi_adapter_soak": "T7",
    "consumer_resilience": "T8",
    "redis_partition": "T9",
    "pool_exhaustion": "T10",
    "cascading_failure": "T11",
    "multi_user_conversation": "T12",
    "migration_under_load": "T13",
    "websocket_longevity": "T14",
    "baseline_snapshots": "T15",
}
#: the plan's `chaos_tests` job (`continue-on-error: true`): tests 8, 9, 10, 11
CONTINUE_ON_ERROR = {"T8", "T9", "T10", "T11"}
#: controls that start the embedded stack for an experiment
STACK_CONTROLS = ("chaosmessaging.controls.standard", "chaosmessaging.controls.stack")
#: the plan's "failure alerts for critical tests (Test 1, 4, 8, 11)"
CRITICAL = {"T1", "T4", "T8", "T11"}


@dataclass
class Entry:
    """One experiment of the suite."""

    name: str
    path: str
    title: str = ""
    plan_test: str | None = None
    blocking: bool = True
    critical: bool = False
    #: its controls bring up the embedded stack (`controls.standard` or `controls.stack`)
    uses_stack: bool = False
    configuration: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("configuration")
        return data


def experiments_dir(root: str | Path | None = None) -> Path:
    """`<root>/experiments` if given, else `./experiments` (a user's repository, e.g. after
    `chaosmessaging init`), else the experiments this installation ships."""
    if root:
        return Path(root).resolve()
    if (Path.cwd() / "experiments").is_dir():
        return (Path.cwd() / "experiments").resolve()
    from chaosmessaging.resources import bundled

    return bundled("experiments")


def discover(directory: str | Path | None = None, only: list[str] | None = None) -> list[Entry]:
    """Every `*.json` experiment of `directory`, sorted by plan test then name; `only` keeps
    the named ones (file names without `.json`) and fails on a name that does not exist."""
    directory = Path(directory) if directory else experiments_dir()
    entries = []
    if not directory.is_dir():
        raise FileNotFoundError(f"the experiments folder {directory} does not exist")
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or "method" not in doc:
            continue  # not an experiment
        name = path.stem
        tags = set(doc.get("tags") or [])
        plan = PLAN_TESTS.get(name)
        entries.append(
            Entry(
                name=name,
                path=str(path),
                title=doc.get("title", ""),
                plan_test=plan,
                blocking=plan not in CONTINUE_ON_ERROR and "continue-on-error" not in tags,
                critical=plan in CRITICAL or "critical" in tags,
                uses_stack=any(
                    (c.get("provider") or {}).get("module") in STACK_CONTROLS
                    for c in doc.get("controls") or []
                ),
                configuration={
                    k: v
                    for k, v in (doc.get("configuration") or {}).items()
                    if not isinstance(v, dict)
                },
            )
        )
    if only:
        known = {e.name for e in entries}
        unknown = [n for n in only if n.removesuffix(".json") not in known]
        if unknown:
            raise ValueError(
                f"unknown experiment(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        wanted = [n.removesuffix(".json") for n in only]
        entries = [e for e in entries if e.name in wanted]

    def order(e: Entry) -> tuple:
        return (int(e.plan_test[1:]) if e.plan_test else 99, e.name)

    return sorted(entries, key=order)


def profile_values(profile: str, directory: str | Path | None = None) -> tuple[Path | None, dict]:
    """The var file of `profile` and its configuration values. The experiments' own values ARE
    the smoke profile (no var file); a name is `experiments/profiles/<profile>.json`, a path
    (ending in .json or holding a directory) is that file, e.g. a shortened copy of nightly."""
    if profile == "smoke":
        return None, {}
    directory = Path(directory) if directory else experiments_dir()
    named = directory / "profiles" / f"{profile}.json"
    is_path = profile.endswith(".json") or "/" in profile or os.sep in profile
    path = Path(profile).expanduser() if is_path else named
    if not path.is_file():
        raise ValueError(
            f"profile {profile!r}: {path} does not exist (give smoke, a path to a profile "
            "file, or one of: "
            + ", ".join(p.stem for p in sorted(named.parent.glob("*.json")))
            + ")"
        )
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"profile {path} is not valid JSON: {exc}") from None
    values = doc.get("configuration", {}) if isinstance(doc, dict) else None
    if not isinstance(values, dict):
        raise ValueError(f'profile {path} must be an object {{"configuration": {{...}}}}')
    return path, dict(values)

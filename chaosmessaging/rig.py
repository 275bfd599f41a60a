"""Failures of the rig: our load, our login, our tooling, never the system under test.

A run ends one of four ways: completed; deviated (the system breached a criterion); configuration
error (a value or a target is wrong, found before anything started: see
`chaosmessaging.controls.validation`); rig failure (the load did not start or died, the load-test
login was refused, a tool the run needs failed). A rig failure must never read as "deviated — a
weakness may have been discovered".

An activity that finds the rig broken calls `report(sentence)` (or raises `RigFailure`, which
reports itself); the `chaosmessaging.controls.rig` control then stops the method before the next
activity, the safety net reverts every recorded fault, and the journal gets
``"chaosmessaging_rig_failure": {"failures": [...], "reason": ...}`` with status "failed" and
`deviated` false; `chaos run` exits `EXIT_RIG_FAILURE` (3) instead of 1.

Nothing here imports an activity module (activities import this one).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from logzero import logger

__all__ = [
    "EXIT_RIG_FAILURE",
    "RigFailure",
    "report",
    "failures",
    "reset",
    "chaos_run_arguments",
    "experiment_dir",
]

#: `chaos run`'s exit code for a run that ended on a rig failure (deviated and configuration
#: errors exit 1, as Chaos Toolkit decides)
EXIT_RIG_FAILURE = 3

_failures: list[str] = []


class RigFailure(ActivityFailed):
    """Our rig failed (load, login, tooling): not a weakness of the system. Raising it also
    reports it, so the run ends as a rig failure even if the activity's failure is tolerated."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        report(message)


def report(sentence: str) -> None:
    """Record that the rig failed (once per sentence) and say so in the log."""
    if sentence not in _failures:
        _failures.append(sentence)
        logger.error(f"rig failure: {sentence}")


def failures() -> list[str]:
    """The rig failures reported in this process since the last `reset`."""
    return list(_failures)


def reset() -> None:
    _failures.clear()


#: value-taking options of `chaos` itself (before the `run` sub-command)
_CHAOS_VALUE_OPTIONS = {"--log-file", "--log-format", "--settings", "--log-level"}


def chaos_run_arguments(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The arguments of the `chaos run` command this process runs (parsed by chaostoolkit's own
    click command: ``source``, ``var``, ``var_file``...), or None when this is not `chaos run`
    (tests, the nightly runner in-process). Lets a control see what the user asked for, e.g. a
    `--var-file` that Chaos Toolkit only warns about."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or Path(argv[0]).name not in ("chaos", "chaostoolkit"):
        return None
    rest, i = argv[1:], 0
    while i < len(rest) and rest[i] != "run":
        i += 2 if rest[i] in _CHAOS_VALUE_OPTIONS else 1
    if i >= len(rest):
        return None
    try:
        from chaostoolkit.commands.run import run as run_command

        with run_command.make_context(
            "run", list(rest[i + 1 :]), resilient_parsing=True
        ) as context:
            return dict(context.params)
    except Exception as exc:  # never stop a run because we could not read its arguments
        logger.debug(f"could not read the chaos run arguments: {exc}")
        return None


def experiment_dir(argv: list[str] | None = None) -> Path | None:
    """The folder of the experiment file `chaos run` was given (None: not `chaos run`, or the
    experiment came from a URL)."""
    source = (chaos_run_arguments(argv) or {}).get("source")
    if not source or "://" in str(source):
        return None
    path = Path(str(source)).expanduser()
    return path.resolve().parent if path.is_file() else None

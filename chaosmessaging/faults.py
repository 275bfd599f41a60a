"""The fault ledger: every fault an action injects, and how to take it back.

Actions call `record()` right after injecting a fault and `clear()` once it is reverted. The
ledger lives in `<home>/faults.json` (home as in `chaosmessaging.stack.state.stack_home`), so a
safety-net control or `chaosmessaging revert` in another shell can undo whatever is left after a
crash, a Ctrl-C or a forgotten rollback.

A fault's *revert recipe* is plain data (``{"kind": "process_down", "service": "consumer"}``), never
code: a reverter registered for the recipe's kind turns it back into an action. Modules register
their reverters with `register_reverter` when imported; `revert_all` imports every module of
`chaosmessaging.actions` when it meets a kind nobody registered yet (the ledger may be read by a
process, such as the CLI, that never imported the action which recorded the fault).

Recipes in use (``kind`` -> fields; registered by the module named):

- ``process_down`` -> ``service`` (+ ``backend``, a target backend's `describe()`, when it is not
  the embedded stack's processes) or ``command``, ``pidfile``, ``cwd``: start it, ready included
  (`actions.process`); ``process_paused`` -> ``service`` (+ ``backend``): resume it
- ``container_stopped`` / ``container_paused`` -> ``container``, ``name``, ``docker_host``: start /
  unpause (`actions.docker`)
- ``load`` -> ``pid``, ``create_time``, ``summary_path``: stop k6 (`actions.load`)
- ``toxic`` -> ``proxy``, ``toxic``, ``api``: delete it; ``proxy_disabled`` -> ``proxy``, ``api``:
  enable it (`actions.toxiproxy`)

Two processes may write at once (a chaos run and the CLI), so every read-modify-write holds an
exclusive `fcntl` lock on `<home>/faults.lock`; the JSON file itself is replaced atomically.
Reverters run *outside* the lock because they may call `clear()` themselves. Nothing secret is
stored: passwords embedded in URLs are redacted before writing.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import pkgutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from logzero import logger

from chaosmessaging.config import redact
from chaosmessaging.util import atomic_write_json, same_process, stack_home

__all__ = [
    "Fault",
    "LedgerError",
    "Reverter",
    "record",
    "clear",
    "active",
    "revert",
    "revert_all",
    "register_reverter",
    "ledger_path",
]

#: A reverter receives the recipe and the ledger's home directory; its return value is reported.
Reverter = Callable[[dict, Path], Any]

_REVERTERS: dict[str, Reverter] = {}


@dataclass
class Fault:
    id: str
    kind: str
    target: str
    revert: dict
    when: float
    when_iso: str = ""
    owner_pid: int | None = None
    owner_create_time: float | None = None
    details: dict = field(default_factory=dict)

    def owner_alive(self) -> bool:
        """True while the process that recorded the fault still runs (same create time)."""
        return same_process(self.owner_pid, self.owner_create_time) is not None


def register_reverter(kind: str, func: Reverter) -> None:
    """Make `func(recipe, home)` the way to revert faults whose recipe kind is `kind`."""
    _REVERTERS[kind] = func


def ledger_path(home: str | os.PathLike | None = None) -> Path:
    return stack_home(home) / "faults.json"


@contextmanager
def _locked(home: str | os.PathLike | None) -> Iterator[Path]:
    path = ledger_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / "faults.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class LedgerError(RuntimeError):
    """The fault ledger cannot be read; the message names the file and what to do."""


def _read(path: Path) -> list[Fault]:
    try:
        if not path.exists():
            return []
        text = path.read_text()
        if not text.strip():
            return []
        raw = json.loads(text)
        return [Fault(**item) for item in raw.get("faults", [])]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise LedgerError(
            f"the fault ledger {path} is unreadable or corrupt ({detail}); faults it lists may "
            "still be active: undo them by hand (restart the services it names, delete the "
            "toxics on the proxy), then delete the file"
        ) from None


def _write(path: Path, faults: list[Fault]) -> None:
    atomic_write_json(path, {"version": 1, "faults": [asdict(f) for f in faults]})


def _scrub(value: Any) -> Any:
    """Redact credentials in every string of a recipe (the ledger is a plain file)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def record(
    kind: str,
    target: str,
    revert: dict,
    home: str | os.PathLike | None = None,
    details: dict | None = None,
) -> str:
    """Add a fault to the ledger and return its id.

    `revert` is the recipe; its ``"kind"`` (defaulting to `kind`) selects the reverter.
    """
    recipe = _scrub({"kind": kind, **revert})
    now = time.time()
    me = psutil.Process()
    fault = Fault(
        id=uuid.uuid4().hex[:12],
        kind=kind,
        target=target,
        revert=recipe,
        when=now,
        when_iso=datetime.fromtimestamp(now, UTC).isoformat(),
        owner_pid=me.pid,
        owner_create_time=me.create_time(),
        details=_scrub(details or {}),
    )
    with _locked(home) as path:
        faults = _read(path)
        faults.append(fault)
        _write(path, faults)
    logger.debug(f"fault {fault.id} recorded: {kind} on {target}")
    return fault.id


def clear(
    id_or_target: str, home: str | os.PathLike | None = None, kind: str | None = None
) -> list[Fault]:
    """Remove the fault with this id, or every fault on this target (optionally of one kind)."""
    with _locked(home) as path:
        faults = _read(path)
        keep, gone = [], []
        for f in faults:
            hit = f.id == id_or_target or f.target == id_or_target
            if hit and (kind is None or f.kind == kind):
                gone.append(f)
            else:
                keep.append(f)
        if gone:
            _write(path, keep)
    return gone


def active(home: str | os.PathLike | None = None) -> list[Fault]:
    """The faults recorded and not yet cleared, oldest first."""
    with _locked(home) as path:
        return _read(path)


def _import_action_modules() -> None:
    from chaosmessaging import actions

    for mod in pkgutil.iter_modules(actions.__path__):
        try:
            importlib.import_module(f"{actions.__name__}.{mod.name}")
        except Exception as exc:  # a broken optional module must not block other reverts
            logger.warning(f"could not import chaosmessaging.actions.{mod.name}: {exc}")


def _reverter(kind: str) -> Reverter | None:
    if kind not in _REVERTERS:
        _import_action_modules()
    return _REVERTERS.get(kind)


def revert(fault: Fault, home: str | os.PathLike | None = None) -> dict:
    """Revert one fault and clear it from the ledger if that worked; never raises."""
    kind = fault.revert.get("kind", fault.kind)
    result: dict[str, Any] = {"id": fault.id, "kind": fault.kind, "target": fault.target}
    func = _reverter(kind)
    if func is None:
        result.update(
            status="failed",
            error=f"no reverter registered for fault kind {kind!r}; revert it by hand "
            f"({fault.revert}) then run `chaosmessaging revert` again",
        )
        return result
    try:
        result["output"] = func(dict(fault.revert), stack_home(home))
        result["status"] = "reverted"
        clear(fault.id, home)
    except Exception as exc:
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        logger.error(f"could not revert fault {fault.id} ({fault.kind} on {fault.target}): {exc}")
    return result


def revert_all(home: str | os.PathLike | None = None, mine_only: bool = False) -> list[dict]:
    """Revert every fault in the ledger, newest first; a failed one stays listed.

    With `mine_only`, faults recorded by another process that still runs are left alone (that
    process's own safety net owns them); faults of dead processes are always reverted.
    """
    faults = active(home)
    me = os.getpid()
    results = []
    for fault in reversed(faults):
        if mine_only and fault.owner_pid != me and fault.owner_alive():
            continue
        results.append(revert(fault, home))
    return results

"""Kill, start and restart services (through their target backend), pidfile targets, or cmdline
matches.

Three ways to name a target, exactly one per call:

- `name`: a service, reached through the target backend configuration chooses for it
  (`chaosmessaging.backends`: the embedded stack's process group, Docker containers, Kubernetes
  pods); start and restart return once it is ready again;
- `pidfile`: a file holding the pid of any process (e.g. a staging service on this host);
- `match`: a regular expression searched in each process's command line (psutil). Refused when it
  matches more than `max_processes` processes, and never applied to this process or its parents.

A kill that takes a service down is recorded in the fault ledger with a recipe to start it again
(for pidfile/match targets only when a `command` to start it is given).
"""

import os
import re
import signal as _signal
import subprocess
from pathlib import Path

import psutil
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import faults
from chaosmessaging.backends import Backend, Identity, backend_for, backend_from
from chaosmessaging.backends.process import NotOurs, ProcessBackend
from chaosmessaging.stack.control import signal_number
from chaosmessaging.util import home_of

__all__ = ["kill_service", "start_service", "restart_service", "resume_service"]

_TERMINATING = {_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT}


def _home(configuration: Configuration) -> str | None:
    return home_of(configuration)


def _signum(sig: str | int) -> int:
    try:
        return signal_number(sig)
    except ValueError as exc:
        raise ActivityFailed(f"{exc}; or give a number") from None


def _one_target(name: str | None, pidfile: str | None, match: str | None) -> None:
    given = [k for k, v in (("name", name), ("pidfile", pidfile), ("match", match)) if v]
    if len(given) != 1:
        raise ActivityFailed(
            "name exactly one target: `name` (embedded stack service), "
            f"`pidfile` or `match` (got {', '.join(given) or 'none'})"
        )


def _protected() -> set[int]:
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _pid_from_file(pidfile: str) -> int:
    path = Path(pidfile)
    try:
        return int(path.read_text().split()[0])
    except FileNotFoundError:
        raise ActivityFailed(f"pidfile {path} does not exist: is the process running?") from None
    except (ValueError, IndexError):
        raise ActivityFailed(f"pidfile {path} does not hold a pid") from None


def _processes(pidfile: str | None, match: str | None, max_processes: int) -> list[psutil.Process]:
    protected = _protected()
    if pidfile:
        pid = _pid_from_file(pidfile)
        if pid in protected:
            raise ActivityFailed(f"pidfile {pidfile} names this chaos process or a parent ({pid})")
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(pid)
            return [proc]
        except psutil.NoSuchProcess:
            raise ActivityFailed(f"process {pid} from {pidfile} is not running") from None
    try:
        pattern = re.compile(match)
    except re.error as exc:
        raise ActivityFailed(f"`match` is not a valid regular expression: {exc}") from None
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["pid"] in protected or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline and pattern.search(cmdline):
            found.append(proc)
    if not found:
        raise ActivityFailed(f"no running process matches {match!r}")
    if len(found) > max_processes:
        listed = ", ".join(f"{p.pid}: {' '.join(p.info['cmdline'])[:60]}" for p in found[:5])
        raise ActivityFailed(
            f"{len(found)} processes match {match!r} but max_processes is "
            f"{max_processes} ({listed}); make the pattern more specific or "
            "raise max_processes"
        )
    return found


def record_service_fault(
    name: str,
    killed: list[Identity] | int | None,
    signame: str,
    home: str | None,
    paused: bool = False,
    backend: Backend | None = None,
) -> str:
    """Record that service `name` was taken down (or paused) by a signal; the revert recipe
    starts (or resumes) it through the same target backend. Not an activity: shared by the
    actions that kill."""
    recipe: dict = {"service": name}
    if backend is not None and backend.name != "process":
        recipe["backend"] = backend.describe()
    if isinstance(killed, list):
        details = {"instances": [i.to_json() for i in killed], "signal": signame}
        if backend is None or backend.name == "process":
            details["pid"] = int(killed[0].instance) if killed and killed[0].instance else None
    else:
        details = {"pid": killed, "signal": signame}
    return faults.record(
        "process_paused" if paused else "process_down",
        f"service:{name}",
        recipe,
        home=home,
        details=details,
    )


def _instance_ids(backend: Backend, found: list[Identity]) -> list:
    """Pids as numbers for the process backend (as before), container/pod ids otherwise."""
    if backend.name == "process":
        return [int(i.instance) for i in found if i.instance]
    return [i.instance for i in found]


def _pid_target(pidfile: str | None, match: str | None) -> str:
    return f"pidfile:{Path(pidfile).resolve()}" if pidfile else f"match:{match}"


def kill_service(
    name: str = None,
    signal: str = "SIGKILL",
    pidfile: str = None,
    match: str = None,
    max_processes: int = 1,
    command: list = None,
    grace: float = 10.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Send `signal` (default SIGKILL, i.e. a crash) to a service and wait until it is gone.

    Target: `name` of an embedded stack service, or `pidfile`, or `match` (regex on the command
    line; at most `max_processes` processes). For pidfile/match targets pass `command` (argv list)
    to let the safety net start the process again. SIGSTOP pauses (reverted with SIGCONT).
    Returns ``{"killed": [pids], "signal": "SIGKILL", "target": ..., "fault_id": ...}``.
    """
    _one_target(name, pidfile, match)
    signum = _signum(signal)
    signame = _signal.Signals(signum).name
    home = _home(configuration)
    if name:
        backend = backend_for(name, configuration, secrets)
        killed = backend.kill(name, signame, grace=grace)
        paused = signum in (_signal.SIGSTOP, _signal.SIGTSTP)
        fault_id = record_service_fault(name, killed, signame, home, paused=paused, backend=backend)
        ids = _instance_ids(backend, killed)
        logger.info(f"sent {signame} to {name} through the {backend.name} backend ({ids})")
        return {
            "killed": ids,
            "signal": signame,
            "target": f"service:{name}",
            "backend": backend.name,
            "identities": [i.to_json() for i in killed],
            "fault_id": fault_id,
        }

    procs = _processes(pidfile, match, max_processes)
    pids = [p.pid for p in procs]
    for proc in procs:
        try:
            proc.send_signal(signum)
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied:
            raise ActivityFailed(
                f"not allowed to signal process {proc.pid}: run as its user or as root"
            ) from None
    survivors = []
    if signum in _TERMINATING:
        _, alive = psutil.wait_procs(procs, timeout=grace)
        survivors = [p.pid for p in alive]
    target = _pid_target(pidfile, match)
    fault_id = None
    if command:
        recipe = {
            "command": list(command),
            "pidfile": str(Path(pidfile).resolve()) if pidfile else None,
            "cwd": os.getcwd(),
        }
        fault_id = faults.record(
            "process_down", target, recipe, home=home, details={"pids": pids, "signal": signame}
        )
    logger.info(f"sent {signame} to {target} (pids {pids})")
    return {
        "killed": pids,
        "signal": signame,
        "target": target,
        "still_running": survivors,
        "fault_id": fault_id,
    }


def _spawn(command: list[str], pidfile: str | None, cwd: str | None) -> int:
    if not command:
        raise ActivityFailed(
            "`command` (a list of strings) is required to start a process that "
            "is not an embedded stack service"
        )
    try:
        proc = subprocess.Popen(
            [str(c) for c in command],
            cwd=cwd or None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise ActivityFailed(f"could not start {command[0]!r}: {exc}") from None
    if pidfile:
        Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
        Path(pidfile).write_text(f"{proc.pid}\n")
    return proc.pid


def _start_stack_service(
    name: str,
    home: str | None,
    timeout: float,
    configuration: Configuration = None,
    secrets: Secrets = None,
    backend: Backend | None = None,
) -> dict:
    backend = backend or backend_for(name, configuration, secrets)
    started = backend.start(name, timeout)
    faults.clear(f"service:{name}", home)
    ids = _instance_ids(backend, started)
    return {
        "started": ids[0] if len(ids) == 1 else ids,
        "target": f"service:{name}",
        "backend": backend.name,
        "identities": [i.to_json() for i in started],
    }


def start_service(
    name: str = None,
    command: list = None,
    pidfile: str = None,
    cwd: str = None,
    timeout: float = 30.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start a service again: by embedded stack `name` (waits until healthy, up to `timeout` s),
    or by running `command` (argv list) detached, writing its pid to `pidfile` if given.

    Clears the matching fault from the ledger. Returns ``{"started": pid, "target": ...}``.
    """
    home = _home(configuration)
    if name:
        return _start_stack_service(name, home, timeout, configuration, secrets)
    pid = _spawn(command, pidfile, cwd)
    target = f"pidfile:{Path(pidfile).resolve()}" if pidfile else None
    if target:
        faults.clear(target, home, kind="process_down")
    logger.info(f"started {command[0]} (pid {pid})")
    return {"started": pid, "target": target}


def restart_service(
    name: str = None,
    signal: str = "SIGTERM",
    command: list = None,
    pidfile: str = None,
    cwd: str = None,
    timeout: float = 30.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop a service with `signal` (default SIGTERM, escalating to SIGKILL) and start it again.

    By embedded stack `name`, or by `pidfile` plus the `command` that starts it.
    Returns ``{"stopped": old_pid, "started": new_pid, "target": ...}``.
    """
    home = _home(configuration)
    if name:
        backend = backend_for(name, configuration, secrets)
        old = _instance_ids(backend, [i for i in backend.instances(name) if i.alive])
        started = backend.restart(name, signal, timeout)
        faults.clear(f"service:{name}", home)
        new = _instance_ids(backend, started)
        return {
            "stopped": old[0] if len(old) == 1 else old,
            "started": new[0] if len(new) == 1 else new,
            "target": f"service:{name}",
            "backend": backend.name,
            "identities": [i.to_json() for i in started],
        }
    if not pidfile or not command:
        raise ActivityFailed("restart needs `name`, or both `pidfile` and `command`")
    old = None
    try:
        proc = _processes(pidfile, None, 1)[0]
        old = proc.pid
        proc.send_signal(_signum(signal))
        _, alive = psutil.wait_procs([proc], timeout=timeout)
        for p in alive:
            p.kill()
    except ActivityFailed:
        pass  # not running: just start it
    started = start_service(command=command, pidfile=pidfile, cwd=cwd, configuration=configuration)
    return {"stopped": old, "started": started["started"], "target": started["target"]}


def resume_service(name: str, configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Resume a service paused by `kill_service(signal="SIGSTOP")` (SIGCONT, or the backend's
    unpause), and clear its pause from the fault ledger. Returns ``{"resumed": [...], "target":
    ...}``."""
    home = _home(configuration)
    backend = backend_for(name, configuration, secrets)
    found = backend.unpause(name)
    faults.clear(f"service:{name}", home, kind="process_paused")
    ids = _instance_ids(backend, found)
    logger.info(f"resumed {name} through the {backend.name} backend ({ids})")
    return {"resumed": ids, "target": f"service:{name}"}


# -- reverters (see chaosmessaging.faults) ---------------------------------------------------


def _recipe_backend(recipe: dict, home: Path) -> Backend:
    if recipe.get("backend"):
        return backend_from(recipe["backend"])
    return ProcessBackend(str(home))


def _revert_process_down(recipe: dict, home: Path) -> dict:
    if recipe.get("service"):
        backend = _recipe_backend(recipe, home)
        return _start_stack_service(recipe["service"], str(home), 60.0, backend=backend)
    pidfile = recipe.get("pidfile")
    if pidfile:
        try:
            psutil.Process(_pid_from_file(pidfile))
            return {"started": None, "note": f"{pidfile} names a running process already"}
        except (ActivityFailed, psutil.NoSuchProcess):
            pass
    return {"started": _spawn(recipe.get("command") or [], pidfile, recipe.get("cwd"))}


def _revert_process_paused(recipe: dict, home: Path) -> dict:
    try:
        found = _recipe_backend(recipe, home).unpause(recipe["service"])
    except NotOurs as exc:
        raise faults.Refused(str(exc)) from None
    return {"resumed": [i.instance for i in found]}

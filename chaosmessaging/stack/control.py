"""Start, stop and restart one process of the embedded stack, from its state file.

Every process was started by the launcher in a session of its own, so a signal goes to the whole
process group (PostgreSQL's backends included) and never to anything we did not start: the pid
must still belong to the process recorded in `stack.json` (same create time).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil

from chaosmessaging.stack import servers
from chaosmessaging.stack.health import wait_healthy
from chaosmessaging.stack.state import ServiceRecord, StackState, load_state, save_state
from chaosmessaging.util import poll

__all__ = ["stop_service", "start_service", "restart_service", "spawn", "signal_number"]

# PostgreSQL: SIGINT is "fast shutdown" (SIGTERM waits for clients to leave).
_GRACEFUL = {"postgres": signal.SIGINT}


def signal_number(sig: str | int) -> int:
    """'SIGKILL', 'KILL', '9' or 9 -> 9, with a clear error for unknown names."""
    if isinstance(sig, int) or str(sig).isdigit():
        return int(sig)
    name = str(sig).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(getattr(signal, name))
    except AttributeError:
        raise ValueError(f"unknown signal {sig!r} (use e.g. SIGKILL, SIGTERM, SIGSTOP)") from None


def spawn(record: ServiceRecord) -> ServiceRecord:
    """Start the process described by `record` (detached, output appended to its log)."""
    Path(record.log).parent.mkdir(parents=True, exist_ok=True)
    with open(record.log, "ab") as out:
        # the record holds only the variables we set (no secrets from the caller's environment)
        env = {**os.environ, **record.env} if record.env else None
        proc = subprocess.Popen(record.cmd, env=env, user=record.user,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    record.pid = proc.pid
    record.create_time = psutil.Process(proc.pid).create_time()
    return record


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (avoids zombies in long runs)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(record: ServiceRecord, sig: int) -> None:
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(record.pid, sig)


def stop_service(name: str, sig: str | int = "SIGTERM", home: str | None = None,
                 timeout: float = 15.0, state: StackState | None = None) -> ServiceRecord:
    """Send `sig` to service `name`; for terminating signals wait until it is gone.

    SIGKILL is what a crash looks like; SIGTERM asks for a graceful stop and escalates to SIGKILL
    after `timeout`. SIGSTOP/SIGCONT pause and resume without waiting.
    """
    state = state or load_state(home)
    record = state.service(name)
    signum = signal_number(sig)
    if signum == signal.SIGTERM:
        signum = _GRACEFUL.get(name, signal.SIGTERM)
    if not record.alive():
        record.pid = None
        save_state(state)
        return record
    pid = record.pid
    _signal_group(record, signum)
    if signum in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP, signal.SIGHUP):
        return record
    def gone() -> bool:
        _reap(pid)
        return not record.alive()

    if not poll(gone, timeout, 0.05):
        _signal_group(record, signal.SIGKILL)
        poll(gone, 30.0, 0.05)
    _reap(pid)
    record.pid = None
    save_state(state)
    return record


def start_service(name: str, home: str | None = None, timeout: float = 30.0,
                  state: StackState | None = None) -> ServiceRecord:
    """Start service `name` again with its recorded command; no-op if it already runs."""
    state = state or load_state(home)
    record = state.service(name)
    if record.alive():
        return record
    if record.health == "postgres":
        _clear_stale_postmaster_pid(record)
    spawn(record)
    save_state(state)
    wait_healthy(record, timeout)
    return record


def _clear_stale_postmaster_pid(record: ServiceRecord) -> None:
    """Make a PostgreSQL that was killed (SIGKILL, plan T11) startable again.

    It leaves `postmaster.pid` and the socket's `.s.PGSQL.<port>.lock` behind, and refuses to
    start while the pid in either belongs to a live process; on a busy machine that pid is soon
    reused by an unrelated one. When no postgres runs on this data directory (our recorded
    postmaster is gone, the caller checked), both files are stale and removed. The data
    directory is also made reachable for the server's user again.
    """
    if "-D" not in record.cmd:
        return
    data_dir = Path(record.cmd[record.cmd.index("-D") + 1])
    servers.reach_data_dir(data_dir, record.user)
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and Path(cmdline[0]).name == "postgres" and str(data_dir) in cmdline:
            return  # a real postmaster on this directory: let PostgreSQL refuse loudly
    for lock in [data_dir / "postmaster.pid", *data_dir.glob(".s.PGSQL.*.lock")]:
        lock.unlink(missing_ok=True)


def restart_service(name: str, home: str | None = None, sig: str | int = "SIGTERM",
                    timeout: float = 30.0) -> ServiceRecord:
    """Stop (with `sig`) then start service `name`."""
    state = load_state(home)
    stop_service(name, sig, state=state, timeout=timeout)
    return start_service(name, state=state, timeout=timeout)

"""Start, stop and restart one process of the embedded stack, from its state file.

Every process was started by the launcher in a session of its own, so a signal goes to the whole
process group (PostgreSQL's backends included) and never to anything we did not start: a process
is ours only when its pid, its start time and its owner marker (`OWNER_ENV`) all match the record
in `stack.json`, and a group is signalled only when that process leads it (we created it). A record
that cannot be proven ours (no start time, another owner) is refused with `NotOurProcess`, never
signalled.

Every process also carries `OWNER_ENV=<home>` in its environment: `owned_processes(home)` finds
them by that mark alone, which is how `stack down` stops a process whose pid never reached the
state file (Ctrl-C between start and write) or whose state file is corrupt. Each start writes an
attempt marker line to the service's log, so an error shows this attempt's lines, never an
earlier one's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from chaosmessaging.stack import pinning, servers
from chaosmessaging.stack.health import wait_healthy
from chaosmessaging.stack.servers import mark_attempt
from chaosmessaging.stack.state import (
    OWNER_ENV,
    ServiceRecord,
    StackState,
    load_state,
    save_state,
    stack_home,
)
from chaosmessaging.util import poll

__all__ = [
    "stop_service",
    "start_service",
    "restart_service",
    "spawn",
    "signal_number",
    "owned_processes",
    "stop_owned",
    "terminate_service",
    "TERMINATING_SIGNALS",
    "NotOurProcess",
]


class NotOurProcess(ValueError):
    """A record names a live process this toolkit cannot prove it started: nothing was sent."""


# PostgreSQL: SIGINT is "fast shutdown" (SIGTERM waits for clients to leave).
_GRACEFUL = {"postgres": signal.SIGINT}

#: Signals whose default effect ends a process: the only ones a stop or restart can use.
TERMINATING_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGKILL", "SIGABRT")


def signal_number(sig: str | int) -> int:
    """'SIGKILL', 'KILL', '9' or 9 -> 9, with a clear error for unknown names and numbers."""
    if isinstance(sig, int) or str(sig).strip().isdigit():
        number = int(sig)
        if number == 0:
            raise ValueError(
                "signal 0 sends nothing (it only checks that a process exists): "
                "use a name such as SIGTERM or SIGKILL"
            )
        try:
            return int(signal.Signals(number))
        except ValueError:
            raise ValueError(
                f"{number} is not a signal on this system (use a name such as SIGTERM or SIGKILL)"
            ) from None
    name = str(sig).strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    member = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if member is None:
        raise ValueError(f"unknown signal {sig!r} (use e.g. SIGKILL, SIGTERM, SIGSTOP)")
    return int(member)


def spawn(record: ServiceRecord, home: str | os.PathLike | None = None) -> ServiceRecord:
    """Start the process described by `record` (detached, output appended to its log after an
    attempt marker line). The process is marked with `OWNER_ENV` = the stack's home."""
    log = Path(record.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    owner = str(stack_home(home if home is not None else log.parent.parent))
    mark_attempt(log, record.name)
    with open(log, "ab") as out:
        # the record holds only the variables we set (no secrets from the caller's environment)
        env = {**os.environ, **record.env, OWNER_ENV: owner}
        proc = subprocess.Popen(
            record.cmd,
            env=env,
            user=record.user,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # CHAOSMESSAGING_STACK_CPUS: the process and all it forks stay on that CPU set;
            # CHAOSMESSAGING_PIPELINE_NICE: the pipeline services yield to the request path
            preexec_fn=pinning.stack_child(record.name),
        )
    record.pid = proc.pid
    record.owner = owner
    try:
        started = psutil.Process(proc.pid)
        record.create_time = started.create_time()
    except psutil.NoSuchProcess:  # exited at once: the health check reports it with its log
        record.create_time = None
        return record
    try:
        # the kernel publishes the new environment a moment after exec: wait until our owner
        # marker is visible, so the first identity check never reads an empty environment
        poll(lambda: started.environ().get(OWNER_ENV) == owner, 5.0, 0.01)
    except psutil.Error:  # exited meanwhile, or not readable: the health check tells
        pass
    return record


def owned_processes(home: str | os.PathLike | None = None) -> list[psutil.Process]:
    """Every live process whose environment marks it as started by the stack in `home`
    (`OWNER_ENV`), whatever the state file says; this process excluded."""
    owner = str(stack_home(home))
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(OWNER_ENV) == owner:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def stop_owned(home: str | os.PathLike | None = None, timeout: float = 10.0) -> list[str]:
    """Stop every process `owned_processes` finds: its whole process group (spawn starts each in
    a session of its own) gets SIGTERM (SIGINT, the fast shutdown, for PostgreSQL), then SIGKILL
    after `timeout`. Returns a description of each group leader stopped ("postgres (pid 123)")."""
    procs = owned_processes(home)
    pids = {p.pid for p in procs}
    described = []
    for proc in procs:
        try:
            leader = os.getpgid(proc.pid)
            if leader != proc.pid and leader in pids:
                continue  # a child (e.g. a PostgreSQL backend): its leader's group signal covers it
            name = proc.name()
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            described.append(f"{name} (pid {proc.pid})")
            _signal_pid_group(proc.pid, signal.SIGCONT)  # a paused process cannot exit
            _signal_pid_group(proc.pid, sig)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    if not poll(lambda: not _running(procs), timeout, 0.05):
        for proc in _running(procs):
            _signal_pid_group(proc.pid, signal.SIGKILL)
        poll(lambda: not _running(procs), 10.0, 0.05)
    return described


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `procs` still running (a zombie has exited; our own children are reaped)."""
    left = []
    for proc in procs:
        _reap(proc.pid)
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    return left


def _signal_pid_group(pid: int, sig: int) -> None:
    """Signal `pid`'s process group if it leads one (as every process spawn starts), else it."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (avoids zombies in long runs)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(record: ServiceRecord, sig: int) -> None:
    """Signal the recorded process, proven ours just before; its whole group only when it leads
    it (spawn starts each in a session of its own), never a group we did not create."""
    proc, why = record.identity()
    if proc is None:
        if why:
            raise NotOurProcess(f"{record.name}: {why}")
        return
    try:
        if os.getpgid(record.pid) == record.pid:
            try:
                os.killpg(record.pid, sig)
                return
            except PermissionError:
                pass
        os.kill(record.pid, sig)
    except ProcessLookupError:
        pass


def stop_service(
    name: str,
    sig: str | int = "SIGTERM",
    home: str | None = None,
    timeout: float = 15.0,
    state: StackState | None = None,
) -> ServiceRecord:
    """Send `sig` to service `name`; for terminating signals wait until it is gone.

    SIGKILL is what a crash looks like; SIGTERM asks for a graceful stop and escalates to SIGKILL
    after `timeout`. SIGSTOP/SIGCONT pause and resume without waiting.
    """
    state = state or load_state(home)
    record = state.service(name)
    signum = signal_number(sig)
    if signum == signal.SIGTERM:
        signum = _GRACEFUL.get(name, signal.SIGTERM)
    proc, why = record.identity()
    if why:
        raise NotOurProcess(f"{name}: {why}")
    if proc is None:
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
        if not poll(gone, 30.0, 0.05):
            raise NotOurProcess(
                f"{name} (pid {pid}) still runs 30 s after SIGKILL (a process in "
                "uninterruptible sleep?); it was not stopped"
            )
    _reap(pid)
    record.pid = None
    save_state(state)
    return record


def terminate_service(
    name: str,
    sig: str | int = "SIGTERM",
    home: str | None = None,
    timeout: float = 15.0,
    state: StackState | None = None,
) -> str:
    """Stop service `name` with a terminating signal (`TERMINATING_SIGNALS`) and say what really
    happened: "stopped by SIGTERM", "did not exit within 15 s of SIGTERM: killed with SIGKILL",
    "was not running". Raises ValueError for a signal that does not end a process."""
    signum = signal_number(sig)
    signame = signal.Signals(signum).name
    if signame not in TERMINATING_SIGNALS:
        raise ValueError(
            f"{signame} does not end a process; use one of {', '.join(TERMINATING_SIGNALS)}"
        )
    state = state or load_state(home)
    record = state.service(name)
    if not record.alive():
        stop_service(name, signum, state=state, timeout=timeout)  # refuses a process not ours
        return "was not running"
    sent = _GRACEFUL.get(name, signum) if signum == signal.SIGTERM else signum
    started = time.monotonic()
    stop_service(name, signum, state=state, timeout=timeout)
    took = time.monotonic() - started
    label = signal.Signals(sent).name
    if sent != signal.SIGKILL and took >= timeout:
        return f"did not exit within {timeout:.0f} s of {label}: killed with SIGKILL"
    return f"stopped by {label} in {took:.1f} s"


def start_service(
    name: str, home: str | None = None, timeout: float = 30.0, state: StackState | None = None
) -> ServiceRecord:
    """Start service `name` again with its recorded command; no-op if it already runs."""
    state = state or load_state(home)
    record = state.service(name)
    if record.alive():
        return record
    if record.health == "postgres":
        _clear_stale_postmaster_pid(record)
    spawn(record, state.home)
    save_state(state)
    wait_healthy(record, timeout)
    return record


def _clear_stale_postmaster_pid(record: ServiceRecord) -> None:
    """Make a PostgreSQL that was killed (SIGKILL, plan T11) startable again.

    It leaves `postmaster.pid` behind (and a socket lock where a socket directory is set), and
    refuses to start while the pid in it belongs to a live process; on a busy machine that pid
    is soon reused by an unrelated one. When no postgres runs on this data directory (our
    recorded postmaster is gone, the caller checked), those files are stale and removed. The
    data directory is also made reachable for the server's user again.
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


def restart_service(
    name: str, home: str | None = None, sig: str | int = "SIGTERM", timeout: float = 30.0
) -> ServiceRecord:
    """Stop (with a terminating `sig`, see `terminate_service`) then start service `name`."""
    state = load_state(home)
    terminate_service(name, sig, state=state, timeout=timeout)
    if state.service(name).alive():
        raise ValueError(f"{name} still runs after {sig}; not restarted")
    return start_service(name, state=state, timeout=timeout)

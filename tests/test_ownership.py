"""Act only on what this toolkit provably started (issue 18.1).

A process is ours only when its pid, its start time and its owner marker (`OWNER_ENV`) all match;
a group is signalled only when we created it (the process we started leads it); `stack down
--purge` deletes only in a home that carries our marker file. Every case uses real processes
(`sleep`-like Python children) and the real CLI; each checks what survived, not only the message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from chaosmessaging import faults
from chaosmessaging.stack.state import (
    HOME_MARKER,
    ServiceRecord,
    StackState,
    load_state,
    save_state,
    usable_home,
)
from chaosmessaging.util import OWNER_ENV

CLI = [sys.executable, "-m", "chaosmessaging.cli"]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "--home", str(home), *args], capture_output=True, text=True, timeout=120
    )


def _running(proc: subprocess.Popen) -> bool:
    time.sleep(0.3)  # a signal, had one been sent, has landed
    return proc.poll() is None


@pytest.fixture
def bystanders():
    """Start processes that are not ours to kill; kill whatever is left at the end."""
    procs: list[subprocess.Popen] = []

    def start(env: dict | None = None, session: bool = True) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            start_new_session=session,
            env={**os.environ, **(env or {})},
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _record_state(home: Path, proc: subprocess.Popen, create_time, owner=None) -> None:
    record = ServiceRecord(
        name="consumer",
        pid=proc.pid,
        host="127.0.0.1",
        port=1,
        address="http://127.0.0.1:1",
        cmd=["true"],
        log=str(home / "logs" / "consumer.log"),
        create_time=create_time,
        owner=owner,
    )
    save_state(StackState(home=str(home), started_at=time.time(), services={"consumer": record}))


def test_purge_never_deletes_in_a_folder_that_never_held_a_stack(tmp_path):
    project = tmp_path / "project"
    (project / "data" / "postgres").mkdir(parents=True)
    (project / "data" / "postgres" / "precious.csv").write_text("1,2,3\n")
    proc = _cli(project, "stack", "down", "--purge")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "nothing was deleted" in out and HOME_MARKER in out, out
    assert (project / "data" / "postgres" / "precious.csv").read_text() == "1,2,3\n"


def test_purge_deletes_what_stack_up_created_in_a_marked_home(tmp_path):
    home = usable_home(tmp_path / "home")  # creating a home writes the marker
    assert (home / HOME_MARKER).is_file()
    (home / "data" / "redis").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    proc = _cli(home, "stack", "down", "--purge")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deleted:" in proc.stdout and "data/redis" in proc.stdout
    assert not (home / "data").exists()
    assert (home / "notes.txt").read_text() == "mine"  # only what `stack up` creates goes


def test_purge_of_an_unmarked_empty_folder_is_not_an_error(tmp_path):
    proc = _cli(tmp_path, "stack", "down", "--purge")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing (no stack data here)" in proc.stdout


@pytest.mark.parametrize("command", [("stack", "down"), ("stack", "stop", "consumer")])
def test_a_record_without_start_time_is_never_signalled(tmp_path, bystanders, command):
    """stack.json names a live pid but no start time: the pid may have been reused by anyone."""
    home = usable_home(tmp_path / "home")
    victim = bystanders(session=True)
    _record_state(home, victim, create_time=None)
    proc = _cli(home, *command)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "no start time" in out and "not signalled" in out and "Traceback" not in out, out
    assert _running(victim), out


def test_a_process_without_our_owner_marker_is_never_signalled(tmp_path, bystanders):
    """pid and start time match, but the process was not started by this home's stack."""
    home = usable_home(tmp_path / "home")
    victim = bystanders(env={OWNER_ENV: str(tmp_path / "another-home")})
    _record_state(home, victim, psutil.Process(victim.pid).create_time(), owner=str(home))
    proc = _cli(home, "stack", "stop", "consumer")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "owner marker" in out and "not signalled" in out, out
    assert _running(victim), out


def test_only_the_process_is_signalled_when_it_does_not_lead_its_group(tmp_path, bystanders):
    """Ours (pid, start time, marker) but in this test's process group: the group is not ours
    to signal (it holds pytest); the process itself is stopped and reported so."""
    home = usable_home(tmp_path / "home")
    ours = bystanders(env={OWNER_ENV: str(home)}, session=False)
    assert os.getpgid(ours.pid) != ours.pid
    _record_state(home, ours, psutil.Process(ours.pid).create_time(), owner=str(home))
    proc = _cli(home, "stack", "stop", "consumer")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped by SIGTERM" in proc.stdout
    ours.wait(5)  # we are its parent: reap it
    assert ours.returncode is not None
    assert load_state(home).services["consumer"].pid is None


def test_revert_refuses_a_load_record_without_start_time(tmp_path, bystanders):
    home = usable_home(tmp_path / "home")
    victim = bystanders(env={OWNER_ENV: str(home)})
    faults.record("load", "load:old", {"pid": victim.pid, "summary_path": ""}, home=home)
    proc = _cli(home, "revert")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "refused" and "no start time" in result["error"], out
    assert _running(victim), out
    assert faults.active(home) == []  # never revertable: not retried forever


def test_stop_load_refuses_a_bare_pid_it_did_not_start(tmp_path, bystanders):
    from chaoslib.exceptions import ActivityFailed

    from chaosmessaging.actions.load import stop_load

    victim = bystanders()
    with pytest.raises(ActivityFailed, match="no start time"):
        stop_load(pid=victim.pid, configuration={"chaosmessaging_home": str(tmp_path)})
    assert _running(victim)


def test_stack_down_refuses_while_a_run_uses_the_stack_unless_forced(tmp_path):
    home = usable_home(tmp_path / "home")
    ready = tmp_path / "ready"
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from chaosmessaging.stack.state import register_user\n"
            "register_user(sys.argv[1], \"chaos run of 'T8'\")\n"
            "pathlib.Path(sys.argv[2]).touch()\n"
            "time.sleep(60)\n",
            str(home),
            str(ready),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc = _cli(home, "stack", "down")
        assert proc.returncode == 1, proc.stdout
        assert "in use by chaos run of 'T8'" in proc.stdout and "--force" in proc.stdout
        assert _running(run)
        forced = _cli(home, "stack", "down", "--force")
        assert forced.returncode == 0, forced.stdout
        assert "warning: stopping the stack while it is in use" in forced.stdout
    finally:
        run.kill()
        run.wait()
    # a run that is gone no longer counts
    assert _cli(home, "stack", "down").returncode == 0

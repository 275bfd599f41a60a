"""kill_service / start_service / restart_service on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import faults
from chaosmessaging.actions import process
from chaosmessaging.stack.state import load_state


def _gone(pid: int, wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def sleepers():
    procs: list[subprocess.Popen] = []

    def start(tag: str, n: int = 1) -> list[subprocess.Popen]:
        # a unique argument lets `match` find exactly these processes
        for _ in range(n):
            procs.append(
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", tag])
            )
        return procs[-n:]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture
def stack_service(home, one_service_stack):
    """A one-service embedded stack: an HTTP server recorded in stack.json as 'consumer'."""
    assert one_service_stack == home
    return load_state(home).service("consumer")


def test_kill_by_match_kills_only_the_matching_process(home, sleepers):
    tag = uuid.uuid4().hex
    [victim] = sleepers(tag)
    [bystander] = sleepers(uuid.uuid4().hex)
    out = process.kill_service(match=tag)
    assert out["killed"] == [victim.pid] and out["signal"] == "SIGKILL"
    assert _gone(victim.pid)
    assert bystander.poll() is None
    assert faults.active() == []  # no command given: nothing to revert


def test_match_over_max_processes_is_refused_and_kills_nothing(home, sleepers):
    tag = uuid.uuid4().hex
    procs = sleepers(tag, n=3)
    with pytest.raises(ActivityFailed, match="3 processes match .* max_processes is 2"):
        process.kill_service(match=tag, max_processes=2)
    assert all(p.poll() is None for p in procs)
    out = process.kill_service(match=tag, max_processes=3, signal="TERM")
    assert sorted(out["killed"]) == sorted(p.pid for p in procs) and out["signal"] == "SIGTERM"


def test_match_never_targets_this_process_or_its_parents(home):
    # parent and child both carry a unique tag in their command lines; the child runs
    # kill_service(match=tag): it must find nothing (itself and its parent are protected)
    tag = uuid.uuid4().hex
    child = (
        "import sys\n"
        "from chaoslib.exceptions import ActivityFailed\n"
        "from chaosmessaging.actions import process\n"
        "try:\n"
        "    print(process.kill_service(match=sys.argv[1], max_processes=5))\n"
        "except ActivityFailed as exc:\n"
        "    print('refused:', exc)\n"
    )
    parent = (
        "import subprocess, sys\n"
        f"sys.exit(subprocess.call([sys.executable, '-c', {child!r}, sys.argv[1]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", parent, tag], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"refused: no running process matches '{tag}'"


def test_pidfile_kill_with_command_is_recorded_and_start_service_clears_it(
    home, tmp_path, sleepers
):
    [victim] = sleepers(uuid.uuid4().hex)
    pidfile = tmp_path / "victim.pid"
    pidfile.write_text(str(victim.pid))
    command = [sys.executable, "-c", "import time; time.sleep(300)"]
    out = process.kill_service(pidfile=str(pidfile), command=command)
    assert _gone(victim.pid)
    [fault] = faults.active()
    assert fault.kind == "process_down" and fault.id == out["fault_id"]
    assert fault.revert["command"] == command

    started = process.start_service(command=command, pidfile=str(pidfile))
    try:
        assert int(pidfile.read_text()) == started["started"]
        assert psutil.Process(started["started"]).is_running()
        assert faults.active() == []
    finally:
        os.kill(started["started"], 9)


def test_bad_targets_are_actionable(home, tmp_path):
    with pytest.raises(ActivityFailed, match="name exactly one target"):
        process.kill_service(name="api", match="x")
    with pytest.raises(ActivityFailed, match="does not exist"):
        process.kill_service(pidfile=str(tmp_path / "missing.pid"))
    with pytest.raises(ActivityFailed, match="unknown signal"):
        process.kill_service(match="x", signal="SIGNOPE")
    with pytest.raises(ActivityFailed, match="chaosmessaging stack up"):
        process.kill_service(name="consumer")


def test_kill_stack_service_records_fault_and_revert_all_restarts_it(home, stack_service):
    old = stack_service.pid
    out = process.kill_service(name="consumer")
    assert out["killed"] == [old] and _gone(old)
    [fault] = faults.active()
    assert (fault.kind, fault.target, fault.revert) == (
        "process_down",
        "service:consumer",
        {"kind": "process_down", "service": "consumer"},
    )
    with pytest.raises(ActivityFailed, match="not running"):
        process.kill_service(name="consumer")

    [result] = faults.revert_all()
    assert result["status"] == "reverted"
    record = load_state(home).service("consumer")
    assert record.alive() and record.pid != old
    assert faults.active() == []


def test_restart_stack_service_gives_a_new_pid(home, stack_service):
    old = stack_service.pid
    out = process.restart_service(name="consumer", timeout=10)
    assert out["stopped"] == old and out["started"] != old
    assert load_state(home).service("consumer").alive() and _gone(old)

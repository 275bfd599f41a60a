"""The safety-net control with the real `chaos` CLI: interrupted runs leave no fault behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from chaosmessaging import faults

CHAOS = str(Path(sys.executable).parent / "chaos")
# `chaos` with SIGINT at its default disposition whatever this process inherited: the xdist
# workers of a suite started with SIGINT ignored (in the background by a non-interactive shell, in
# a session of its own) keep it ignored, an ignored signal survives exec, and Python then installs
# no KeyboardInterrupt handler: the run slept through the test's SIGINT (its 60 s pause, in CI)
DEFAULT_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]

# A tiny extension for the experiment: starts a real victim process and records it as a fault
# whose revert kills it (a stand-in for any fault: what matters is that the reverter runs).
VICTIM_MODULE = textwrap.dedent("""
    import os, signal, subprocess, time
    from chaosmessaging import faults

    def _kill(recipe, home):
        slow = os.environ.get("VICTIM_REVERT_MARKER")
        if slow:  # a slow revert, to be interrupted by a second signal
            open(slow, "w").write("reverting")
            time.sleep(2)
        os.kill(recipe["pid"], signal.SIGKILL)
        return {"killed": recipe["pid"]}

    faults.register_reverter("victim_running", _kill)

    def start_victim(pidfile, configuration=None):
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        open(pidfile, "w").write(str(proc.pid))
        faults.record("victim_running", f"victim:{proc.pid}", {"pid": proc.pid},
                      home=(configuration or {}).get("chaosmessaging_home"))
        return proc.pid

    def block(marker, seconds):
        # stands for wait_for_load & co: a Python activity blocking the main thread
        open(marker, "w").write("blocking")
        time.sleep(seconds)
        return "slept"
""")


def _experiment(pidfile: Path, with_safety: bool) -> dict:
    controls = [
        {
            "name": "chaosmessaging-safety",
            "provider": {"type": "python", "module": "chaosmessaging.controls.safety"},
        }
    ]
    experiment = {
        "version": "1.0.0",
        "title": "victim is cleaned up on interruption",
        "description": "starts a fault then waits long enough to be interrupted",
        "method": [
            {
                "type": "action",
                "name": "start-victim",
                "provider": {
                    "type": "python",
                    "module": "victim_actions",
                    "func": "start_victim",
                    "arguments": {"pidfile": str(pidfile)},
                },
                "pauses": {"after": 60},
            }
        ],
    }
    if with_safety:
        experiment["controls"] = controls
    return experiment


def _run_and_interrupt(tmp_path: Path, sig: int, with_safety: bool = True) -> tuple[int, int]:
    (tmp_path / "victim_actions.py").write_text(VICTIM_MODULE)
    pidfile = tmp_path / "victim.pid"
    exp = tmp_path / "experiment.json"
    exp.write_text(json.dumps(_experiment(pidfile, with_safety)))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CHAOSMESSAGING_HOME": str(tmp_path / "home")}
    chaos = subprocess.Popen(
        [
            *DEFAULT_SIGINT,
            CHAOS,
            "--no-version-check",
            "--settings",
            str(tmp_path / "s.yaml"),
            "--log-file",
            str(tmp_path / "chaos.log"),
            "run",
            "--journal-path",
            str(tmp_path / "journal.json"),
            str(exp),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and faults.active(tmp_path / "home")):
            assert chaos.poll() is None, "chaos exited before the fault was injected"
            assert time.monotonic() < deadline, "the fault was never recorded"
            time.sleep(0.1)
        victim = int(pidfile.read_text())
        assert psutil.pid_exists(victim)
        chaos.send_signal(sig)
        return chaos.wait(30), victim
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_chaos_run_interrupted_reverts_faults(tmp_path, sig):
    _, victim = _run_and_interrupt(tmp_path, sig)
    assert _gone(victim)
    assert faults.active(tmp_path / "home") == []
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    [reverted] = journal["chaosmessaging_safety_net"]
    assert reverted["status"] == "reverted" and reverted["kind"] == "victim_running"


def test_without_the_control_the_fault_stays_and_revert_all_undoes_it(tmp_path):
    # proves the test above depends on the control, and that the CLI-side revert works
    _, victim = _run_and_interrupt(tmp_path, signal.SIGINT, with_safety=False)
    try:
        assert not _gone(victim)
        [fault] = faults.active(tmp_path / "home")
        assert fault.kind == "victim_running"
        sys.path.insert(0, str(tmp_path))
        try:
            import victim_actions  # noqa: F401  (registers its reverter, as chaos did)

            [result] = faults.revert_all(tmp_path / "home")
        finally:
            sys.path.remove(str(tmp_path))
        assert result["status"] == "reverted"
        assert faults.active(tmp_path / "home") == []
        for _ in range(50):
            if _gone(victim):
                break
            time.sleep(0.05)
        assert _gone(victim)
    finally:
        if not _gone(victim):
            os.kill(victim, signal.SIGKILL)


# --- interruption while an activity blocks: the run stops there, injects nothing more ---------


def _blocking_experiment(tmp_path: Path, blocker_type: str, pause_after: int) -> dict:
    def victim(name: str, pidfile: str) -> dict:
        return {
            "type": "action",
            "name": name,
            "provider": {
                "type": "python",
                "module": "victim_actions",
                "func": "start_victim",
                "arguments": {"pidfile": str(tmp_path / pidfile)},
            },
        }

    blocker = {
        "type": blocker_type,
        "name": "block-60s",
        "provider": {
            "type": "python",
            "module": "victim_actions",
            "func": "block",
            "arguments": {"marker": str(tmp_path / "blocking"), "seconds": 60},
        },
    }
    if pause_after:
        blocker["pauses"] = {"after": pause_after}
    return {
        "version": "1.0.0",
        "title": "an interrupted run stops at once",
        "description": "a fault, a long blocking activity, then a second fault never injected",
        "controls": [
            {
                "name": "chaosmessaging-safety",
                "provider": {"type": "python", "module": "chaosmessaging.controls.safety"},
            }
        ],
        "method": [
            victim("first-fault", "victim1.pid"),
            blocker,
            victim("second-fault", "victim2.pid"),
        ],
    }


def _start_chaos(
    tmp_path: Path, experiment: dict, env: dict | None = None, run_args: tuple[str, ...] = ()
) -> subprocess.Popen:
    (tmp_path / "victim_actions.py").write_text(VICTIM_MODULE)
    exp = tmp_path / "experiment.json"
    exp.write_text(json.dumps(experiment))
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "CHAOSMESSAGING_HOME": str(tmp_path / "home"),
        **(env or {}),
    }
    return subprocess.Popen(
        [
            CHAOS,
            "--no-version-check",
            "--settings",
            str(tmp_path / "s.yaml"),
            "--log-file",
            str(tmp_path / "chaos.log"),
            "run",
            *run_args,
            "--journal-path",
            str(tmp_path / "journal.json"),
            str(exp),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(path: Path, chaos: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert chaos.poll() is None, f"chaos exited before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def _kill_leftovers(tmp_path: Path) -> None:
    for name in ("victim1.pid", "victim2.pid"):
        pidfile = tmp_path / name
        if pidfile.exists() and not _gone(pid := int(pidfile.read_text())):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(
    "blocker_type,pause_after",
    [("action", 0), ("probe", 60)],
    ids=["action", "probe-with-pause-after"],
)
def test_signal_during_blocking_activity_stops_the_run(tmp_path, sig, blocker_type, pause_after):
    chaos = _start_chaos(tmp_path, _blocking_experiment(tmp_path, blocker_type, pause_after))
    try:
        _wait_for(tmp_path / "blocking", chaos)
        victim = int((tmp_path / "victim1.pid").read_text())
        sent = time.monotonic()
        chaos.send_signal(sig)
        try:
            chaos.wait(15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chaos still running 15 s after {sig.name}")
        took = time.monotonic() - sent
        assert took < 10, f"chaos took {took:.1f} s to stop after {sig.name}"
        assert not (tmp_path / "victim2.pid").exists(), "the second fault was injected anyway"
        assert _gone(victim)
        assert faults.active(tmp_path / "home") == []
        journal = json.loads((tmp_path / "journal.json").read_text())
        assert journal["status"] == "interrupted"
        assert [r["activity"]["name"] for r in journal["run"]] == ["first-fault", "block-60s"]
        [reverted] = journal["chaosmessaging_safety_net"]
        assert reverted["status"] == "reverted" and reverted["kind"] == "victim_running"
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait()
        _kill_leftovers(tmp_path)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_during_the_revert_does_not_cut_it_short(tmp_path, second):
    marker = tmp_path / "reverting"
    chaos = _start_chaos(
        tmp_path,
        _blocking_experiment(tmp_path, "action", 0),
        env={"VICTIM_REVERT_MARKER": str(marker)},
    )
    try:
        _wait_for(tmp_path / "blocking", chaos)
        victim = int((tmp_path / "victim1.pid").read_text())
        chaos.send_signal(signal.SIGTERM)
        _wait_for(marker, chaos, timeout=10)
        chaos.send_signal(second)  # impatient operator while the (2 s) revert runs
        chaos.wait(15)
        assert _gone(victim)
        assert faults.active(tmp_path / "home") == []
        journal = json.loads((tmp_path / "journal.json").read_text())
        assert journal["status"] == "interrupted"
        [reverted] = journal["chaosmessaging_safety_net"]
        assert reverted["status"] == "reverted"
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait()
        _kill_leftovers(tmp_path)


def test_rollbacks_still_run_after_an_interruption_when_asked(tmp_path):
    # the control refuses new method activities once interrupted, never the rollbacks
    experiment = _blocking_experiment(tmp_path, "action", 0)
    experiment["rollbacks"] = [
        {
            "type": "action",
            "name": "note-rollback",
            "provider": {
                "type": "process",
                "path": "touch",
                "arguments": [str(tmp_path / "rolled-back")],
            },
        }
    ]
    chaos = _start_chaos(tmp_path, experiment, run_args=("--rollback-strategy", "always"))
    try:
        _wait_for(tmp_path / "blocking", chaos)
        chaos.send_signal(signal.SIGTERM)
        chaos.wait(15)
        assert (tmp_path / "rolled-back").exists()
        assert not (tmp_path / "victim2.pid").exists()
        assert faults.active(tmp_path / "home") == []
        journal = json.loads((tmp_path / "journal.json").read_text())
        assert journal["status"] == "interrupted"
        assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait()
        _kill_leftovers(tmp_path)

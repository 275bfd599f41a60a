"""The fault ledger: record / clear / revert, across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from chaosmessaging import faults


def _wait_for_pid(pidfile, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{pidfile} never written")


def test_revert_all_restarts_a_pidfile_process_by_running_its_command(tmp_path):
    pidfile = tmp_path / "svc.pid"
    command = [sys.executable, "-c", "import time; time.sleep(300)", "ledger-test"]
    fid = faults.record(
        "process_down",
        f"pidfile:{pidfile}",
        {"command": command, "pidfile": str(pidfile), "cwd": str(tmp_path)},
        home=tmp_path,
    )
    assert not pidfile.exists()

    [result] = faults.revert_all(tmp_path)

    assert result["id"] == fid and result["status"] == "reverted"
    pid = _wait_for_pid(pidfile)
    try:
        proc = psutil.Process(pid)
        assert proc.cmdline()[-1] == "ledger-test"
        assert proc.cwd() == str(tmp_path)
        assert faults.active(tmp_path) == []
        # a second revert finds nothing left to do
        assert faults.revert_all(tmp_path) == []
    finally:
        os.kill(pid, 9)


def test_clear_by_id_target_and_kind(tmp_path):
    a = faults.record("toxic", "proxy:redis", {"proxy": "redis", "toxic": "lat"}, home=tmp_path)
    faults.record("proxy_disabled", "proxy:redis", {"proxy": "redis"}, home=tmp_path)
    c = faults.record("load", "load:r1", {"pid": 1}, home=tmp_path)
    assert [f.id for f in faults.clear(a, tmp_path)] == [a]
    assert [f.kind for f in faults.clear("proxy:redis", tmp_path, kind="toxic")] == []
    assert [f.kind for f in faults.clear("proxy:redis", tmp_path)] == ["proxy_disabled"]
    assert [f.id for f in faults.active(tmp_path)] == [c]


def test_no_credentials_are_written(tmp_path):
    faults.record(
        "toxic",
        "proxy:pg",
        {"api": "http://admin:s3cret@127.0.0.1:8474", "dsn": ["postgresql://u:pw@h/db"]},
        home=tmp_path,
    )
    text = (tmp_path / "faults.json").read_text()
    assert "s3cret" not in text and ":pw@" not in text
    assert "http://admin:***@127.0.0.1:8474" in text


def test_unknown_kind_fails_loudly_and_stays_listed(tmp_path):
    faults.record("martian", "mars:1", {"x": 1}, home=tmp_path)
    [result] = faults.revert_all(tmp_path)
    assert result["status"] == "failed"
    assert "no reverter registered for fault kind 'martian'" in result["error"]
    assert [f.kind for f in faults.active(tmp_path)] == ["martian"]


def test_failing_reverter_keeps_the_fault(tmp_path):
    def boom(recipe, home):
        raise RuntimeError("engine down")

    faults.register_reverter("flaky", boom)
    faults.record("flaky", "t", {}, home=tmp_path)
    [result] = faults.revert_all(tmp_path)
    assert result["status"] == "failed" and "engine down" in result["error"]
    assert len(faults.active(tmp_path)) == 1


def test_concurrent_writers_lose_nothing(tmp_path):
    writer = (
        "import sys\n"
        "from chaosmessaging import faults\n"
        "for i in range(40):\n"
        "    faults.record('load', f'load:{sys.argv[1]}-{i}', {'pid': i},\n"
        "                  home=sys.argv[2])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", writer, str(n), str(tmp_path)]) for n in range(4)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    targets = {f.target for f in faults.active(tmp_path)}
    assert len(targets) == 160
    json.loads((tmp_path / "faults.json").read_text())  # still one valid document


def test_mine_only_leaves_faults_of_another_live_run(tmp_path):
    calls = []
    faults.register_reverter("noted", lambda recipe, home: calls.append(recipe["n"]))
    holder = (
        "import sys, time\n"
        "from chaosmessaging import faults\n"
        "faults.record('noted', 'other', {'n': 'other'}, home=sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "ready"
        faults.record("noted", "mine", {"n": "mine"}, home=tmp_path)
        faults.revert_all(tmp_path, mine_only=True)
        assert calls == ["mine"]
        assert [f.target for f in faults.active(tmp_path)] == ["other"]
        other.kill()
        other.wait()
        faults.revert_all(tmp_path, mine_only=True)  # its owner is gone now: ours to revert
        assert calls == ["mine", "other"] and faults.active(tmp_path) == []
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


@pytest.mark.parametrize("content", ["", "   \n"])
def test_empty_ledger_file_reads_as_no_faults(tmp_path, content):
    (tmp_path / "faults.json").write_text(content)
    assert faults.active(tmp_path) == []

"""A fault record names its reverter (`module:function`): reverting depends on no import side
effect, old records (without the name) are still read, and a ledger cannot name code outside
chaosmessaging (issue 20.4)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from chaosmessaging import faults

CLI = [sys.executable, "-m", "chaosmessaging.cli"]


def _recipe(marker: Path) -> dict:
    touch = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"
    return {"command": [sys.executable, "-c", touch, str(marker)], "pidfile": None, "cwd": "/"}


def _revert_in_a_fresh_process(home: Path) -> subprocess.CompletedProcess:
    """The CLI imports no action module before reading the ledger."""
    return subprocess.run(
        [*CLI, "--home", str(home), "revert"], capture_output=True, text=True, timeout=60
    )


def _appeared(path: Path, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_a_record_names_its_reverter_and_a_fresh_process_uses_it(tmp_path):
    marker = tmp_path / "started"
    faults.record("process_down", "cmd:demo", _recipe(marker), home=tmp_path)
    [fault] = faults.active(tmp_path)
    assert fault.reverter == "chaosmessaging.actions.process:_revert_process_down"
    proc = _revert_in_a_fresh_process(tmp_path)
    assert proc.returncode == 0 and '"status": "reverted"' in proc.stdout, proc.stdout
    assert _appeared(marker)


def test_an_old_record_without_a_reverter_is_still_reverted(tmp_path):
    marker = tmp_path / "started"
    faults.record("process_down", "cmd:demo", _recipe(marker), home=tmp_path)
    ledger = json.loads(faults.ledger_path(tmp_path).read_text())
    for item in ledger["faults"]:
        item.pop("reverter")  # as written before the field existed
    faults.ledger_path(tmp_path).write_text(json.dumps(ledger))
    proc = _revert_in_a_fresh_process(tmp_path)
    assert proc.returncode == 0 and '"status": "reverted"' in proc.stdout, proc.stdout
    assert _appeared(marker)


def test_a_ledger_cannot_name_code_outside_chaosmessaging(tmp_path):
    marker = tmp_path / "pwned"
    faults.record("odd", "x", {"cmd": f"touch {marker}"}, home=tmp_path, reverter="os:system")
    proc = _revert_in_a_fresh_process(tmp_path)
    assert proc.returncode == 1 and '"status": "failed"' in proc.stdout, proc.stdout
    time.sleep(0.5)
    assert not marker.exists()
    assert len(faults.active(tmp_path)) == 1  # left listed for a human to look at

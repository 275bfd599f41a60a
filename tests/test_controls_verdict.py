"""The verdict control turns "steady state did not hold before the method" into a failed run."""

import json
import subprocess
import sys
from pathlib import Path

CHAOS = str(Path(sys.executable).with_name("chaos"))


def _experiment(tmp_path: Path, exists: Path, with_control: bool) -> Path:
    experiment = {
        "version": "1.0.0",
        "title": "t",
        "description": "d",
        "steady-state-hypothesis": {
            "title": "a file exists",
            "probes": [
                {
                    "type": "probe",
                    "name": "file-exists",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "os.path",
                        "func": "exists",
                        "arguments": {"path": str(exists)},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "noop",
                "provider": {"type": "python", "module": "os", "func": "getpid"},
            }
        ],
    }
    if with_control:
        experiment["controls"] = [
            {
                "name": "verdict",
                "provider": {"type": "python", "module": "chaosmessaging.controls.verdict"},
            }
        ]
    path = tmp_path / "e.json"
    path.write_text(json.dumps(experiment))
    return path


def _run(tmp_path: Path, experiment: Path) -> tuple[int, dict]:
    journal = tmp_path / "j.json"
    proc = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(experiment)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, json.loads(journal.read_text())


def test_broken_steady_state_before_the_method_fails_the_run(tmp_path):
    code, journal = _run(tmp_path, _experiment(tmp_path, tmp_path / "missing", True))
    assert code == 1
    assert journal["status"] == "failed"
    assert journal["chaosmessaging_verdict"]["probes"] == ["file-exists"]


def test_without_the_control_chaos_toolkit_would_report_success(tmp_path):
    """Why the control exists: chaoslib alone exits 0 for this run."""
    code, journal = _run(tmp_path, _experiment(tmp_path, tmp_path / "missing", False))
    assert code == 0 and journal["status"] == "completed"


def test_a_healthy_run_is_left_alone(tmp_path):
    present = tmp_path / "present"
    present.write_text("x")
    code, journal = _run(tmp_path, _experiment(tmp_path, present, True))
    assert code == 0 and journal["status"] == "completed"
    assert "chaosmessaging_verdict" not in journal

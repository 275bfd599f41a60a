"""The nightly tools judge, or say why they cannot (issue 18.5).

`baseline` on a missing or too short history, `nightly` on a missing experiments folder or a bad
coverage/history file, `dashboard` on a missing, empty or garbage folder: each says so in one
sentence naming the file, with its own exit code, and no experiment is started.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaosmessaging.nightly import history
from chaosmessaging.nightly.command import EXIT_NOT_ENOUGH_HISTORY

CLI = [sys.executable, "-m", "chaosmessaging.cli"]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "--home", str(tmp_path / "home"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_baseline_on_a_missing_history_fails(tmp_path):
    proc = _cli(tmp_path, "baseline", "--history", str(tmp_path / "nope.json"))
    assert proc.returncode == 2, proc.stdout
    assert f"the history file {tmp_path / 'nope.json'} does not exist" in proc.stdout
    assert "regression(s)" not in proc.stdout


def test_baseline_with_one_night_says_not_enough_history(tmp_path):
    path = tmp_path / "history.json"
    history.append(path, "2026-11-01", "nightly", {"message_soak.soak.p95_ms": 100.0})
    proc = _cli(tmp_path, "baseline", "--history", str(path))
    assert proc.returncode == EXIT_NOT_ENOUGH_HISTORY, proc.stdout
    assert "not enough history (1 of 5 nights of profile nightly" in proc.stdout


def test_baseline_on_garbage_names_the_file(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("{not json")
    proc = _cli(tmp_path, "baseline", "--history", str(path))
    assert proc.returncode == 2 and f"{path} is not valid JSON" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("listing", [True, False])
def test_nightly_on_a_missing_experiments_folder_errors(tmp_path, listing):
    args = ["nightly", "--experiments", str(tmp_path / "nope")] + (["--list"] if listing else [])
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout
    assert f"--experiments {tmp_path / 'nope'} is not a folder" in proc.stdout
    assert "[]" not in proc.stdout  # never an empty CI matrix that passes


def test_every_nightly_input_is_checked_before_the_first_experiment(tmp_path):
    bad_history = tmp_path / "history.json"
    bad_history.write_text("[1, 2")
    proc = _cli(
        tmp_path,
        "nightly",
        "--coverage",
        str(tmp_path / "coverage.json"),
        "--history",
        str(bad_history),
        "--results",
        str(tmp_path / "night"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"--coverage file {tmp_path / 'coverage.json'} does not exist" in out
    assert f"--history file {bad_history} is not valid JSON" in out
    assert "nightly suite:" not in out and not (tmp_path / "night").exists()
    assert not (tmp_path / "home").exists()  # no stack, no run


def test_a_bad_experiment_file_is_named(tmp_path):
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "broken.json").write_text('{"method": [}')
    proc = _cli(tmp_path, "nightly", "--experiments", str(folder), "--list")
    assert proc.returncode == 2 and f"{folder / 'broken.json'} is not valid JSON" in proc.stdout


@pytest.mark.parametrize("case", ["missing", "empty", "garbage"])
def test_dashboard_on_a_folder_without_results_says_so(tmp_path, case):
    folder = tmp_path / "results"
    if case != "missing":
        folder.mkdir()
    if case == "garbage":
        (folder / "suite.json").write_text("<html>not a suite</html>")
    proc = _cli(tmp_path, "dashboard", str(folder))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    expected = {
        "missing": "is not a folder of nightly results",
        "empty": "holds no nightly results",
        "garbage": f"{folder / 'suite.json'} is not valid JSON",
    }[case]
    assert expected in out and "Traceback" not in out, out
    assert not (folder / "index.html").exists()


def test_a_late_error_never_loses_the_nights_history(tmp_path, monkeypatch):
    """The coverage file vanishes while the suite runs: the gate fails late, the history and
    dashboard are still written, and the night does not pass."""
    import argparse

    from chaosmessaging.nightly import command, runner

    coverage = tmp_path / "coverage.json"
    coverage.write_text(json.dumps({"totals": {"percent_covered": 95.0}}))
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "tiny.json").write_text(
        json.dumps({"title": "t", "description": "d", "method": [{"type": "probe"}]})
    )

    def run_suite(entries, profile, results, **kwargs):
        coverage.unlink()  # the late error
        results.mkdir(parents=True, exist_ok=True)
        suite = runner.SuiteResult(
            night="2026-11-02", profile=profile, results_dir=str(results), started_at=1.0
        )
        suite.ended_at = 2.0
        (results / "suite.json").write_text(json.dumps(suite.to_json()))
        return suite

    monkeypatch.setattr(runner, "run_suite", run_suite)
    args = argparse.Namespace(
        experiments=str(folder),
        only=None,
        profile="smoke",
        list=False,
        results=str(tmp_path / "nights" / "2026-11-02"),
        history=None,
        coverage=str(coverage),
        home=None,
        keep_stack=False,
        no_alerts=True,
    )
    code = command.nightly(args)
    assert code != 0
    assert (tmp_path / "nights" / "history.json").exists()
    assert (tmp_path / "nights" / "2026-11-02" / "index.html").exists()

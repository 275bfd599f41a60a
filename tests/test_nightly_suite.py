"""The nightly suite runner on small real experiments (real `chaos run`, no stack needed):
verdicts and exit codes, continue-on-error, discovery of new experiments, and an interrupted
suite leaving no fault behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from chaosmessaging import faults
from chaosmessaging.nightly import catalog, history
from chaosmessaging.nightly.runner import run_suite

SUPPORT = Path(__file__).resolve().parent / "support"
CLI = str(Path(sys.executable).with_name("chaosmessaging"))


def experiment(
    folder: Path, name: str, holds: bool, tags: list | None = None, method: list | None = None
) -> Path:
    """A minimal experiment whose steady state holds (or not): a file exists."""
    target = folder / ("present" if holds else "absent")
    (folder / "present").touch()
    doc = {
        "version": "1.0.0",
        "title": f"{name} test experiment",
        "description": "test",
        "tags": tags or [],
        "steady-state-hypothesis": {
            "title": "file exists",
            "probes": [
                {
                    "type": "probe",
                    "name": "file-exists",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "os.path",
                        "func": "exists",
                        "arguments": {"path": str(target)},
                    },
                }
            ],
        },
        "method": method
        or [
            {
                "type": "probe",
                "name": "noop",
                "provider": {
                    "type": "python",
                    "module": "os.path",
                    "func": "exists",
                    "arguments": {"path": "/"},
                },
            }
        ],
        "rollbacks": [],
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def suite_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(SUPPORT))
    monkeypatch.delenv("CHAOSMESSAGING_API_URL", raising=False)
    exps = tmp_path / "experiments"
    exps.mkdir()
    return exps, home


def test_a_new_experiment_file_is_discovered_with_no_edit(suite_env):
    exps, _ = suite_env
    experiment(exps, "alpha", True)
    assert [e.name for e in catalog.discover(exps)] == ["alpha"]
    experiment(exps, "beta", True)
    (exps / "profiles").mkdir()
    (exps / "profiles" / "nightly.json").write_text('{"configuration": {}}')
    assert [e.name for e in catalog.discover(exps)] == ["alpha", "beta"]
    assert catalog.profile_values("smoke", exps) == (None, {})
    assert catalog.profile_values("nightly", exps)[0] == exps / "profiles" / "nightly.json"


def test_a_profile_is_a_name_or_a_path_and_a_bad_one_is_named(tmp_path):
    exps = tmp_path / "experiments"
    (exps / "profiles").mkdir(parents=True)
    (exps / "profiles" / "nightly.json").write_text('{"configuration": {"t1_rate": 500}}')
    short = tmp_path / "elsewhere" / "nightly-short.json"
    short.parent.mkdir()
    short.write_text('{"configuration": {"t1_rate": 500, "t1_duration_s": 180}}')
    assert catalog.profile_values(str(short), exps) == (
        short,
        {"t1_rate": 500, "t1_duration_s": 180},
    )
    with pytest.raises(ValueError, match="does not exist .*one of: nightly"):
        catalog.profile_values("nightlyy", exps)
    with pytest.raises(ValueError, match="missing.json does not exist"):
        catalog.profile_values(str(tmp_path / "missing.json"), exps)
    short.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        catalog.profile_values(str(short), exps)
    short.write_text("[1]")
    with pytest.raises(ValueError, match="must be an object"):
        catalog.profile_values(str(short), exps)


def test_the_plans_chaos_tests_continue_on_error_and_critical_tests_are_marked():
    by_name = {e.name: e for e in catalog.discover()}
    assert not by_name["consumer_resilience"].blocking  # T8, in the plan's chaos_tests job
    assert not by_name["redis_partition"].blocking  # T9
    assert by_name["consumer_resilience"].critical  # T8 alerts
    assert by_name["message_soak"].blocking and by_name["message_soak"].critical  # T1


def test_a_blocking_failure_fails_the_night_a_continue_on_error_one_does_not(suite_env, tmp_path):
    exps, home = suite_env
    experiment(exps, "good", True)
    experiment(exps, "chaos_flaky", False, tags=["continue-on-error"])
    lines: list[str] = []
    suite = run_suite(
        catalog.discover(exps),
        "smoke",
        tmp_path / "results" / "2026-11-01",
        home=home,
        progress=lines.append,
        progress_every_s=1,
    )
    assert [e.status for e in suite.experiments] == ["failed", "passed"]  # sorted by name
    assert suite.exit_code() == 0, "a continue-on-error failure must not fail the night"
    flaky = suite.experiments[0]
    assert not flaky.blocking and "file-exists" in flaky.reason
    assert flaky.criteria and flaky.criteria[0]["ok"] is False
    folder = tmp_path / "results" / "2026-11-01"
    for name in ("good", "chaos_flaky"):
        assert (folder / name / "journal.json").exists()
        assert (folder / name / "chaos.log").exists()
    assert json.loads((folder / "suite.json").read_text())["exit_code"] == 0
    assert any("[1/2] chaos_flaky" in line for line in lines)  # live progress

    experiment(exps, "bad", False)
    suite = run_suite(
        catalog.discover(exps, only=["bad"]),
        "smoke",
        tmp_path / "results" / "2026-11-02",
        home=home,
        progress=lines.append,
    )
    assert suite.exit_code() == 1 and [e.name for e in suite.blocking_failures] == ["bad"]
    figures = history.night_figures(tmp_path / "results" / "2026-11-02")
    assert figures["bad.passed"] == 0.0 and figures["bad.duration_s"] > 0


def test_an_interrupted_suite_leaves_no_fault_behind(suite_env, tmp_path):
    exps, home = suite_env
    pidfile = tmp_path / "sleep.pid"
    experiment(
        exps,
        "holds_a_fault",
        True,
        method=[
            {
                "type": "action",
                "name": "hold-a-fault",
                "provider": {
                    "type": "python",
                    "module": "nightly_activities",
                    "func": "hold_fault",
                    "arguments": {"seconds": 120, "pidfile": str(pidfile)},
                },
            }
        ],
    )
    proc = subprocess.Popen(
        [
            CLI,
            "nightly",
            "--experiments",
            str(exps),
            "--results",
            str(tmp_path / "results" / "2026-11-03"),
            "--no-alerts",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CHAOSMESSAGING_HOME": str(home)},
    )
    deadline = time.monotonic() + 60
    while not faults.active(home) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert faults.active(home), "the experiment never recorded its fault"
    held = int(pidfile.read_text())
    assert psutil.pid_exists(held)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=150)
    assert proc.returncode == 130, out
    assert faults.active(home) == []
    assert not psutil.pid_exists(held) or psutil.Process(held).status() == psutil.STATUS_ZOMBIE
    suite = json.loads((tmp_path / "results" / "2026-11-03" / "suite.json").read_text())
    assert suite["interrupted"] and suite["experiments"][0]["status"] == "interrupted"


def test_the_ci_report_job_merges_the_matrix_parts_into_one_night(suite_env, tmp_path):
    exps, home = suite_env
    experiment(exps, "good", True)
    experiment(exps, "bad", False)
    parts = tmp_path / "parts"
    for name in ("good", "bad"):  # one matrix job per experiment, as nightly.yml runs them
        run_suite(
            catalog.discover(exps, only=[name]),
            "smoke",
            parts / f"experiment-{name}-smoke",
            home=home,
            progress=lambda m: None,
        )
    from chaosmessaging.nightly import merge

    night = tmp_path / "nightly" / "2026-11-04"
    code = merge.main(
        [
            str(parts),
            str(night),
            "--profile",
            "smoke",
            "--history",
            str(tmp_path / "nightly" / "history.json"),
        ]
    )
    assert code == 1  # "bad" is blocking
    suite = json.loads((night / "suite.json").read_text())
    assert sorted(e["name"] for e in suite["experiments"]) == ["bad", "good"]
    assert suite["blocking_failures"] == ["bad"]
    assert (night / "good" / "journal.json").exists() and (night / "index.html").exists()
    assert (tmp_path / "nightly" / "index.html").exists()
    nights = json.loads((tmp_path / "nightly" / "history.json").read_text())["nights"]
    assert nights[-1]["figures"]["good.passed"] == 1.0


def test_coverage_below_the_plans_92_percent_fails_the_night(suite_env, tmp_path):
    exps, home = suite_env
    experiment(exps, "good", True)
    coverage = tmp_path / "coverage.json"
    results = tmp_path / "results"
    for night, pct, expected in (("2026-11-05", 93.4, 0), ("2026-11-06", 91.9, 1)):
        coverage.write_text(json.dumps({"totals": {"percent_covered": pct}}))
        proc = subprocess.run(
            [
                CLI,
                "nightly",
                "--experiments",
                str(exps),
                "--results",
                str(results / night),
                "--coverage",
                str(coverage),
                "--no-alerts",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CHAOSMESSAGING_HOME": str(home)},
        )
        assert proc.returncode == expected, proc.stdout + proc.stderr
        suite = json.loads((results / night / "suite.json").read_text())
        assert suite["gates"][0]["measured_pct"] == pct and suite["exit_code"] == expected
    page = (results / "2026-11-06" / "index.html").read_text()
    assert "<tr class='gate' data-ok='false'><td>coverage</td>" in page
    nights = json.loads((results / "history.json").read_text())["nights"]
    assert [n["figures"]["suite.coverage_pct"] for n in nights] == [93.4, 91.9]


def test_the_extension_never_imports_the_nightly_suite():
    import ast

    root = Path(__file__).resolve().parents[1] / "chaosmessaging"
    offenders = []
    for package in ("actions", "probes", "controls", "clients"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                offenders += [
                    f"{path.name}: {n}" for n in names if n.startswith("chaosmessaging.nightly")
                ]
    assert not offenders


def test_each_experiment_folder_holds_only_its_own_runs_facts(suite_env, tmp_path):
    exps, home = suite_env
    record = [
        {
            "type": "action",
            "name": "record-a-fact",
            "provider": {
                "type": "python",
                "module": "chaosmessaging.runs",
                "func": "record",
                "arguments": {"key": "mark:test", "value": 1},
            },
        }
    ]
    experiment(exps, "first", True, method=record)
    experiment(exps, "second", True, method=record)
    suite = run_suite(
        catalog.discover(exps),
        "smoke",
        tmp_path / "results" / "2026-11-07",
        home=home,
        progress=lambda m: None,
    )
    first, second = suite.experiments
    assert len(first.run_ids) == 1 and len(second.run_ids) == 1
    assert first.run_ids != second.run_ids
    for exp in (first, second):
        facts = list((tmp_path / "results" / "2026-11-07" / exp.name / "facts").glob("*.json"))
        assert [f.stem for f in facts] == exp.run_ids


def test_a_runs_other_files_are_neither_run_ids_nor_run_facts(tmp_path):
    """The WebSocket actions keep `<run id>.conversations-<label>.json` (a list) beside the run
    facts: it must not pass for a run of its own, nor break the night's figures."""
    from chaosmessaging.nightly import collect

    runs_dir = tmp_path / "home" / "runs"
    runs_dir.mkdir(parents=True)
    run_id = "run-20261205T085336-30be28"
    (runs_dir / f"{run_id}.json").write_text(json.dumps({"recovery:t8": {"seconds": 1.5}}))
    (runs_dir / f"{run_id}.conversations-t4.json").write_text(json.dumps([{"id": "c1"}]))
    (runs_dir / f"{run_id}.samples-soak.json").write_text(json.dumps({"samples": []}))
    assert collect.known_runs(tmp_path / "home") == {run_id}

    night = tmp_path / "night"
    (night / "mixed_load" / "facts").mkdir(parents=True)
    (night / "suite.json").write_text(
        json.dumps({"experiments": [{"name": "mixed_load", "status": "passed", "duration_s": 3}]})
    )
    facts = night / "mixed_load" / "facts"
    (facts / f"{run_id}.json").write_text((runs_dir / f"{run_id}.json").read_text())
    (facts / f"{run_id}.conversations-t4.json").write_text(json.dumps([{"id": "c1"}]))
    figures = history.night_figures(night)
    assert figures["mixed_load.passed"] == 1.0
    assert figures["mixed_load.recovery_t8_s"] == 1.5

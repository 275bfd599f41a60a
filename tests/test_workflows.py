"""The GitHub workflows: actionlint passes on them, and they keep the plan's shape."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _actionlint() -> str | None:
    beside = Path(sys.executable).with_name("actionlint")
    return str(beside) if beside.exists() else shutil.which("actionlint")


def test_actionlint_passes_on_every_workflow():
    binary = _actionlint()
    if binary is None:
        pytest.skip(
            "actionlint is not installed (it comes with the dev extra: ./scripts/bootstrap)"
        )
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} >= {"nightly.yml", "ci.yml"}
    result = subprocess.run([binary, *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    binary = _actionlint()
    if binary is None:
        pytest.skip(
            "actionlint is not installed (it comes with the dev extra: ./scripts/bootstrap)"
        )
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nope }}\n"
    )
    result = subprocess.run([binary, str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_nightly_runs_at_0210_with_a_matrix_derived_from_the_repository():
    flow = yaml.safe_load((WORKFLOWS / "nightly.yml").read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"] == [{"cron": "10 2 * * *"}]
    assert "profile" in triggers["workflow_dispatch"]["inputs"]
    jobs = flow["jobs"]
    assert "nightly --list" in "".join(s.get("run", "") for s in jobs["list"]["steps"])
    assert (
        jobs["experiment"]["strategy"]["matrix"]["experiment"]
        == "${{ fromJSON(needs.list.outputs.experiments) }}"
    )
    uploads = [
        s
        for s in jobs["experiment"]["steps"]
        if s.get("uses", "").startswith("actions/upload-artifact")
    ]
    assert "matrix.experiment" in uploads[0]["with"]["name"]
    assert "baseline" in jobs and "--weekly-report" in str(jobs["baseline"])


def test_ci_lints_and_tests_on_python_311_and_312():
    flow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert set(flow[True]) >= {"push", "pull_request"}
    assert flow["jobs"]["tests"]["strategy"]["matrix"]["python"] == ["3.11", "3.12"]
    assert "ruff check" in str(flow["jobs"]["lint"])

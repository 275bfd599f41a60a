"""`chaosmessaging init` gives a working starting point: experiments, k6 scripts, profiles, a
settings template listing every address, name and secret the code reads (checked against the
source, so it cannot drift), and a GitHub workflow for a staging platform that actionlint
accepts, with secrets by name and no embedded stack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chaosmessaging import starter
from chaosmessaging.config import KEYS

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("chaosmessaging"))
#: variables that are the tool's own plumbing, not a setting of the user's platform
INTERNAL = {
    "CHAOSMESSAGING_RUN_ID",  # set by a run for its own activities
    "CHAOSMESSAGING_STACK_OWNER",  # marks the embedded stack's processes
    "CHAOSMESSAGING_REDIS_SERVER",  # embedded stack's server binaries
    "CHAOSMESSAGING_PG_BIN",
    "CHAOSMESSAGING_DASHBOARD_URL",  # the nightly suite's link in alerts
}


@pytest.fixture(scope="module")
def initialised(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("user") / "my-chaos"
    done = subprocess.run([CLI, "init", str(target)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def test_init_writes_experiments_k6_profiles_settings_and_workflow(initialised):
    for relative in (
        "experiments/consumer_resilience.json",
        "experiments/profiles/nightly.json",
        "k6/message_load.js",
        starter.SETTINGS_FILE,
        starter.WORKFLOW_FILE,
    ):
        assert (initialised / relative).is_file(), relative


def test_the_settings_template_lists_every_variable_the_code_reads(initialised):
    template = (initialised / starter.SETTINGS_FILE).read_text()
    read = set()
    for path in (ROOT / "chaosmessaging").rglob("*.py"):
        read |= set(re.findall(r"CHAOSMESSAGING_[A-Z_]+[A-Z]", path.read_text()))
    settings = read - INTERNAL
    assert len(settings) >= 15
    missing = sorted(v for v in settings if f"# {v}=" not in template)
    assert missing == [], f"variables read by the code but absent from the template: {missing}"
    for key, (env, _, _) in KEYS.items():
        assert key in starter.DESCRIPTIONS, f"{key}: add a line to starter.DESCRIPTIONS"
        assert f"# {key}: {starter.DESCRIPTIONS[key]}" in template and f"# {env}=" in template
    # secrets sit under the secrets heading, with no value
    secrets = template.split("## Secrets", 1)[1].split("## Safety", 1)[0]
    for key in starter.SECRET_KEYS:
        assert f"# {KEYS[key][0]}=\n" in secrets
    assert "chaosmessaging-loadtest" not in template  # the embedded stack's password


def test_the_settings_template_names_each_experiments_platform_names(initialised):
    template = (initialised / starter.SETTINGS_FILE).read_text()
    experiment = json.loads((ROOT / "experiments" / "redis_latency.json").read_text())
    assert experiment["configuration"]["lat_proxy"] == "redis"
    assert "# redis_latency: lat_proxy=redis" in template


def test_the_workflow_passes_actionlint_and_targets_an_external_platform(initialised):
    workflow = (initialised / starter.WORKFLOW_FILE).read_text()
    binary = Path(sys.executable).with_name("actionlint")
    binary = str(binary) if binary.exists() else shutil.which("actionlint")
    if binary is None:
        pytest.skip(
            "actionlint is not installed (it comes with the dev extra: ./scripts/bootstrap)"
        )
    done = subprocess.run(
        [binary, str(initialised / starter.WORKFLOW_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # every secret by name from repository secrets, never a literal; no embedded stack
    for key in starter.SECRET_KEYS:
        assert re.search(rf"{KEYS[key][0]}: \$\{{\{{ secrets\.[A-Z_]+ \}}\}}", workflow), key
    assert "CHAOSMESSAGING_API_URL: ${{ vars.STAGING_API_URL }}" in workflow
    assert "stack up" not in workflow and "[stack]" not in workflow and "[all]" not in workflow
    shipped = sorted(p.stem for p in (ROOT / "experiments").glob("*.json"))
    assert f"experiment: [{', '.join(shipped)}]" in workflow


def test_init_force_rewrites_the_starter_files_too(initialised):
    settings = initialised / starter.SETTINGS_FILE
    settings.write_text("# mine\n")
    done = subprocess.run(
        [CLI, "init", str(initialised), "--force"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert settings.read_text() != "# mine\n"  # --force overwrites, as for the experiments

"""experiments/sustained_login.json (plan T6), smoke profile, through the real `chaos` CLI against
the session's embedded stack (auth service, seeded load-test users): it holds on a healthy stack
with the figures in the journal, and fails when logins start failing behind its back."""

import json
from pathlib import Path

import pytest

from chaosmessaging import faults
from chaosmessaging.config import DEFAULT_LOADTEST_PASSWORD

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "sustained_login.json"

pytestmark = pytest.mark.slow


def _after(journal: dict) -> dict:
    return {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}


def test_sustained_login_smoke_holds_with_its_figures_in_the_journal(embedded_stack, chaos_run):
    config = json.loads(EXPERIMENT.read_text())["configuration"]
    code, journal, output = chaos_run(EXPERIMENT, "--var", "t6_duration_s:int=15")
    assert code == 0, output[-3000:]
    after = {name: p["output"] for name, p in _after(journal).items()}
    ratio = after["login-success-rate-above-minimum"]
    assert ratio["ratio"] >= config["t6_min_success_rate"]
    planned = config["t6_rate"] * 15
    assert ratio["denominator_grew"] >= (1 - config["t6_max_dropped_rate"]) * planned
    token = after["token-generation-p95-within-limit"]
    assert 0 < token["value"] <= config["t6_token_p95_s"]
    assert token["observations"] == ratio["numerator_grew"]
    memory = after["auth-memory-stable"]["services"]["auth"]
    assert memory["first_mean_bytes"] > 20 * 2**20  # a real process holding argon2's memory
    pool = after["redis-pool-utilization-below-limit"]["services"]["auth"]
    assert pool["samples"] >= 10 and pool["max"] < config["t6_max_pool_utilization"]
    # the password reaches k6 and the seed command through their environment only: never in
    # the journal, the chaos output, stack.json, service or k6 logs, load summaries
    assert DEFAULT_LOADTEST_PASSWORD not in json.dumps(journal) + output
    home = Path(embedded_stack.home)
    for path in [home / "stack.json", *home.rglob("*.log"), *home.rglob("*.json")]:
        assert DEFAULT_LOADTEST_PASSWORD not in path.read_text(errors="replace"), path
    assert faults.active(embedded_stack.home) == []


def test_sustained_login_fails_when_logins_start_failing(embedded_stack, chaos_run, tmp_path):
    experiment = json.loads(EXPERIMENT.read_text())
    names = [a["name"] for a in experiment["method"]]
    experiment["method"].insert(
        names.index("start-login-load") + 1,
        {
            "type": "action",
            "name": "sabotage-corrupt-password-hashes",
            "provider": {"type": "python", "module": "sabotage", "func": "corrupt_login_passwords"},
        },
    )
    experiment["rollbacks"].append(
        {
            "type": "action",
            "name": "restore-password-hashes",
            "provider": {"type": "python", "module": "sabotage", "func": "restore_login_passwords"},
        }
    )
    variant = tmp_path / "sustained_login-sabotaged.json"
    variant.write_text(json.dumps(experiment))
    code, journal, output = chaos_run(variant, "--var", "t6_duration_s:int=8")
    assert code != 0 and journal["deviated"], output[-3000:]
    ratio = _after(journal)["login-success-rate-above-minimum"]
    assert ratio["tolerance_met"] is False
    assert ratio["output"]["ok"] is False and ratio["output"]["ratio"] < 0.5
    restored = next(
        r for r in journal["rollbacks"] if r["activity"]["name"] == "restore-password-hashes"
    )
    assert restored["output"] > 0  # the shared stack's users work again for the other tests

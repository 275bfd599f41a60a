"""Plan tests 2 and 3 (conversation_stress, participant_invalidation) through the real `chaos`
CLI against the session's embedded stack: they pass on the healthy stack (smoke profile) and
fail on the sabotages their verdicts exist for — a row-level security policy that lets everyone
read every conversation (T2), and API processes whose participant caches are never invalidated
(T3).
"""

import json
from pathlib import Path

import pytest

from chaosmessaging.stack.control import start_service, stop_service
from chaosmessaging.stack.state import load_state, save_state

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

pytestmark = pytest.mark.slow


def _after(journal: dict) -> dict:
    return {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}


def _variant(tmp_path: Path, name: str, edit) -> Path:
    experiment = json.loads((EXPERIMENTS / f"{name}.json").read_text())
    edit(experiment)
    path = tmp_path / f"{name}-variant.json"
    path.write_text(json.dumps(experiment))
    return path


def _sabotage(name: str, func: str) -> dict:
    return {
        "type": "action",
        "name": name,
        "provider": {"type": "python", "module": "sabotage", "func": func, "arguments": {}},
    }


def test_conversation_stress_smoke_holds_on_the_reference_stack(embedded_stack, chaos_run):
    code, journal, output = chaos_run(EXPERIMENTS / "conversation_stress.json")
    after = _after(journal)
    assert code == 0, json.dumps({k: v["output"] for k, v in after.items()}, indent=1)[-4000:]
    authz = after["unauthorized-reads-denied-and-nothing-leaked"]["output"]
    assert authz["attempts"] > 0 and authz["leaks"] == 0 and authz["server_denied"] >= 1
    conflicts = after["stale-updates-conflict"]["output"]
    assert conflicts["conflicts"] > 0 and conflicts["stale_accepted"] == 0
    assert after["participant-cache-hit-ratio-above-minimum"]["output"]["ratio"] > 0.8


def test_conversation_stress_fails_when_a_policy_lets_everyone_read(
    embedded_stack, chaos_run, tmp_path
):
    def edit(e):
        e["method"].insert(1, _sabotage("permit-every-conversation", "permit_every_conversation"))
        e["rollbacks"].append(_sabotage("restore-policy", "restore_conversation_policy"))

    code, journal, output = chaos_run(_variant(tmp_path, "conversation_stress", edit))
    assert code != 0 and journal["deviated"]
    authz = _after(journal)["unauthorized-reads-denied-and-nothing-leaked"]
    assert authz["tolerance_met"] is False
    assert authz["output"]["leaks"] > 0 and "LEAK" in authz["output"]["reason"]
    assert authz["output"]["examples"]


def test_participant_invalidation_smoke_holds_on_the_reference_stack(embedded_stack, chaos_run):
    code, journal, output = chaos_run(EXPERIMENTS / "participant_invalidation.json")
    after = _after(journal)
    assert code == 0, json.dumps({k: v["output"] for k, v in after.items()}, indent=1)[-4000:]
    stale = after["no-stale-read-after-a-removal"]["output"]
    assert stale["stale_reads"] == 0 and stale["reads_after_removal"] > 0
    assert stale["cross_process_reads"] > 0
    assert after["hit-ratio-back-within-limit"]["output"]["recovered_after_s"] is not None


@pytest.fixture
def api_without_invalidation(embedded_stack):
    """The embedded stack's API restarted with the participants_no_invalidation mutant
    (MSGSTACK_MUTANT), and restarted as it was afterwards."""
    home = embedded_stack.home

    def restart(extra: dict) -> None:
        stop_service("api", home=home, timeout=20)
        state = load_state(home)
        record = state.service("api")
        record.env = {k: v for k, v in record.env.items() if k != "MSGSTACK_MUTANT"} | extra
        save_state(state)
        start_service("api", home=home, timeout=60)

    restart({"MSGSTACK_MUTANT": "participants_no_invalidation"})
    try:
        yield
    finally:
        restart({})


def test_participant_invalidation_fails_with_stale_reads_when_invalidation_is_off(
    api_without_invalidation, chaos_run, tmp_path
):
    def edit(e):
        e["configuration"].update(t3_readers_after_s=5, t3_recovery_within_s=5, t3_hit_window_s=2)

    code, journal, output = chaos_run(_variant(tmp_path, "participant_invalidation", edit))
    assert code != 0 and journal["deviated"]
    stale = _after(journal)["no-stale-read-after-a-removal"]
    assert stale["tolerance_met"] is False
    assert stale["output"]["stale_reads"] > 0
    assert stale["output"]["examples"] and "conversation=" in stale["output"]["examples"][0]

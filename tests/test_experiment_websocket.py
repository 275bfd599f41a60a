"""The WebSocket experiments (mixed_load T4, gateway_restart), smoke profile, run by the real
`chaos` CLI against a private embedded stack: they hold on a healthy gateway, and each
client-side verdict fails, naming what went wrong by id, when the gateway is sabotaged
(tests/support/gateway_sabotage.py): a leaked frame, a corrupted byte, a dropped frame, a socket
closed by the server, a gateway that does not resume after a restart."""

import json
from pathlib import Path

import pytest

from chaosmessaging import faults

ROOT = Path(__file__).resolve().parents[1]
MIXED = ROOT / "experiments" / "mixed_load.json"
RESTART = ROOT / "experiments" / "gateway_restart.json"
SHORT_T4 = ("--var", "t4_duration_s:int=8", "--var", "t4_rate:int=10", "--var", "t4_settle_s:int=5")

pytestmark = pytest.mark.slow


def _sabotaged(experiment: Path, sabotage: str, tmp_path: Path) -> Path:
    """The experiment with the gateway restarted under `sabotage` first and healed after."""
    doc = json.loads(experiment.read_text())

    def restart(name: str, value: str) -> dict:
        return {
            "type": "action",
            "name": name,
            "provider": {
                "type": "python",
                "module": "gateway_sabotage",
                "func": "restart_gateway",
                "arguments": {"sabotage": value},
            },
        }

    doc["method"].insert(1, restart(f"sabotage-gateway-{sabotage}", sabotage))
    doc["rollbacks"] = [restart("heal-gateway", ""), *doc.get("rollbacks", [])]
    path = tmp_path / f"{experiment.stem}-{sabotage}.json"
    path.write_text(json.dumps(doc))
    return path


def _after(journal: dict) -> dict:
    return {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}


def test_mixed_load_smoke_holds_with_every_frame_accounted(embedded_stack, chaos_run):
    config = json.loads(MIXED.read_text())["configuration"]
    code, journal, output = chaos_run(MIXED)
    assert code == 0, output[-3000:]
    assert journal["status"] == "completed" and not journal["deviated"]
    after = {name: p["output"] for name, p in _after(journal).items()}
    delivery = after["every-message-reached-every-device"]
    sent = config["t4_rate"] * config["t4_duration_s"]
    assert delivery["acknowledged"] >= 0.95 * sent
    assert delivery["expected"] == delivery["acknowledged"] * config["t4_participants"]
    assert delivery["received"] == delivery["expected"]
    assert delivery["lost"] == delivery["duplicated"] == delivery["leaked"] == 0
    assert delivery["corrupted"] == 0 and delivery["disconnects"] == 0
    assert 0 < delivery["p95_ms"] < config["t4_p95_ms"]
    assert after["no-websocket-protocol-errors"]["grew"] == 0
    assert faults.active(embedded_stack.home) == []


@pytest.mark.parametrize(
    ("sabotage", "figure", "words"),
    [
        ("leak", "leaked", "1 leaked"),
        ("corrupt", "corrupted", "1 corrupted"),
        ("drop", "lost", "1 lost"),
        ("close", "disconnects", "closed by the server"),
    ],
)
def test_mixed_load_fails_when_the_gateway_misbehaves(
    sabotage, figure, words, embedded_stack, chaos_run, tmp_path
):
    code, journal, output = chaos_run(_sabotaged(MIXED, sabotage, tmp_path), *SHORT_T4)
    assert code != 0 and journal["deviated"], output[-3000:]
    probe = _after(journal)["every-message-reached-every-device"]
    assert probe["tolerance_met"] is False
    verdict = probe["output"]
    assert verdict["ok"] is False and verdict[figure] >= 1, verdict
    assert words in verdict["reason"], verdict["reason"]
    if figure != "disconnects":  # the ids of what went wrong are named
        examples = verdict["examples"][figure]
        assert examples and " -> " in examples[0] or " @ " in examples[0]
    assert faults.active(embedded_stack.home) == []


def test_gateway_restart_smoke_resumes_without_loss(embedded_stack, chaos_run):
    config = json.loads(RESTART.read_text())["configuration"]
    code, journal, output = chaos_run(RESTART)
    assert code == 0, output[-3000:]
    delivery = _after(journal)["every-message-reached-every-device-across-the-restart"]["output"]
    devices = config["tg_users"] * config["tg_devices_per_user"]
    assert delivery["lost"] == delivery["duplicated"] == 0 and delivery["received"] > 0
    assert delivery["reconnects"] >= devices  # the kill really cut every socket
    assert delivery["max_reconnect_s"] < config["tg_max_reconnect_s"]
    assert faults.active(embedded_stack.home) == []


def test_gateway_restart_fails_when_the_gateway_does_not_resume(
    embedded_stack, chaos_run, tmp_path
):
    code, journal, output = chaos_run(_sabotaged(RESTART, "no-resume", tmp_path))
    assert code != 0 and journal["deviated"], output[-3000:]
    verdict = _after(journal)["every-message-reached-every-device-across-the-restart"]["output"]
    assert verdict["ok"] is False and verdict["lost"] > 0, verdict
    assert "lost" in verdict["reason"] and verdict["examples"]["lost"]


LARGE = ROOT / "experiments" / "large_payload.json"
MULTI = ROOT / "experiments" / "multi_user_conversation.json"
LONG = ROOT / "experiments" / "websocket_longevity.json"


def test_large_payload_smoke_holds_byte_exact(embedded_stack, chaos_run):
    config = json.loads(LARGE.read_text())["configuration"]
    code, journal, output = chaos_run(LARGE)
    assert code == 0, output[-3000:]
    after = {name: p["output"] for name, p in _after(journal).items()}
    delivery = after["every-large-message-arrived-byte-exact"]
    assert delivery["acknowledged"] >= 0.9 * config["t5_rate"] * config["t5_duration_s"]
    assert delivery["corrupted"] == delivery["lost"] == 0
    assert delivery["received"] == delivery["expected"] > 0
    sizes = after["message-size-histogram-observed-the-payloads"]
    assert sizes["observations"] >= delivery["acknowledged"]
    assert sizes["value"] > config["t5_payload_bytes"] / 2  # the histogram saw 64 KiB messages
    assert after["no-payload-rejected"]["grew"] == 0
    assert after["no-backpressure-drop"]["grew"] == 0
    memory = after["gateway-memory-growth-within-limit"]["services"]["gateway"]
    assert memory["first_mean_bytes"] > 10 * 2**20


def test_large_payload_fails_on_one_corrupted_byte(embedded_stack, chaos_run, tmp_path):
    code, journal, output = chaos_run(
        _sabotaged(LARGE, "corrupt", tmp_path),
        *("--var", "t5_duration_s:int=6", "--var", "t5_settle_s:int=5"),
    )
    assert code != 0 and journal["deviated"], output[-3000:]
    verdict = _after(journal)["every-large-message-arrived-byte-exact"]["output"]
    assert verdict["ok"] is False and verdict["corrupted"] == 1, verdict
    assert verdict["examples"]["corrupted"], verdict


def test_multi_user_conversation_smoke_holds_without_leakage(embedded_stack, chaos_run):
    config = json.loads(MULTI.read_text())["configuration"]
    code, journal, output = chaos_run(MULTI)
    assert code == 0, output[-3000:]
    after = {name: p["output"] for name, p in _after(journal).items()}
    delivery = after["no-leak-and-every-device-got-every-message"]
    fan_out = config["t12_participants"] * config["t12_devices_per_user"]
    # a participant removed mid-load (2 conversations): their pairs are excused, not expected
    assert delivery["removals"] == config["t12_removals"] > 0
    assert delivery["expected"] + delivery["excused"] == delivery["acknowledged"] * fan_out
    assert delivery["received"] == delivery["expected"] + delivery["received_excused"]
    assert delivery["leaked"] == delivery["leaked_after_removal"] == 0
    acl = after["non-participants-are-denied"]
    assert acl["attempts"] == config["t12_acl_attempts"] == acl["denied"]
    assert after["participant-cache-hit-ratio-above-limit"]["ratio"] >= 0.9


def test_multi_user_conversation_fails_on_a_leaked_frame(embedded_stack, chaos_run, tmp_path):
    code, journal, output = chaos_run(
        _sabotaged(MULTI, "leak", tmp_path),
        *("--var", "t12_duration_s:int=5", "--var", "t12_settle_s:int=5"),
    )
    assert code != 0 and journal["deviated"], output[-3000:]
    verdict = _after(journal)["no-leak-and-every-device-got-every-message"]["output"]
    assert verdict["ok"] is False and verdict["leaked"] == 1, verdict
    assert "leaked" in verdict["reason"] and verdict["examples"]["leaked"]


def test_websocket_longevity_short_run_holds(embedded_stack, chaos_run):
    code, journal, output = chaos_run(LONG, "--var", "t14_duration_s:int=20")
    assert code == 0, output[-3000:]
    after = {name: p["output"] for name, p in _after(journal).items()}
    assert after["no-disconnect-and-every-message-delivered"]["disconnects"] == 0
    assert after["no-heartbeat-termination"]["grew"] == 0
    steady = after["frames-arrived-at-a-steady-rate"]
    assert len(steady["counts"]) == 5 and min(steady["counts"]) > 0


def test_websocket_longevity_fails_when_the_server_drops_a_socket(
    embedded_stack, chaos_run, tmp_path
):
    code, journal, output = chaos_run(
        _sabotaged(LONG, "close", tmp_path), "--var", "t14_duration_s:int=10"
    )
    assert code != 0 and journal["deviated"], output[-3000:]
    verdict = _after(journal)["no-disconnect-and-every-message-delivered"]["output"]
    assert verdict["ok"] is False and verdict["disconnects"] >= 1, verdict
    assert verdict["lost"] == 0  # the device resumed: nothing lost, but the drop is caught

"""Client-side evidence is the default: on the reference stack, the senders' record of accepted
messages (k6's ACK lines) matches the ledger exactly, and with a platform file that describes no
ledger the same experiment reaches its verdict from the devices alone, the ledger criteria
reported "n/a" (real `chaos` CLI, private embedded stack)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chaosmessaging.resources import bundled

ROOT = Path(__file__).resolve().parents[1]
MIXED = ROOT / "experiments" / "mixed_load.json"
SHORT_T4 = ("--var", "t4_duration_s:int=6", "--var", "t4_rate:int=10", "--var", "t4_settle_s:int=5")

pytestmark = pytest.mark.slow


def _after(journal: dict) -> dict:
    return {p["activity"]["name"]: p["output"] for p in journal["steady_states"]["after"]["probes"]}


def test_senders_acknowledgments_match_the_ledger_on_the_reference_stack(embedded_stack, chaos_run):
    code, journal, output = chaos_run(MIXED, *SHORT_T4)
    assert code == 0, output[-3000:]
    delivery = _after(journal)["every-message-reached-every-device"]
    evidence = delivery["evidence"]
    assert evidence["senders"] == evidence["ledger"] == delivery["acknowledged"] > 0
    assert evidence["ledger_only"] == 0


def test_without_a_ledger_the_devices_alone_decide_and_ledger_criteria_are_na(
    embedded_stack, chaos_run, tmp_path, monkeypatch
):
    doc = yaml.safe_load((bundled("platforms") / "reference.yaml").read_text())
    del doc["evidence"]
    platform = tmp_path / "no-ledger.yaml"
    platform.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("CHAOSMESSAGING_PLATFORM", str(platform))
    code, journal, output = chaos_run(MIXED, *SHORT_T4)
    assert code == 0, output[-3000:]
    delivery = _after(journal)["every-message-reached-every-device"]
    assert delivery["evidence"] == {"senders": delivery["acknowledged"]}
    assert delivery["acknowledged"] > 0 and delivery["lost"] == 0
    assert delivery["received"] == delivery["expected"]

"""experiments/message_soak.json (plan T1), smoke profile, run by the real `chaos` CLI against a
private embedded stack: every criterion holds on a healthy pipeline and the journal carries the
figures the verdicts were judged on (sampled lags, memory windows, accounting, k6)."""

import json
from pathlib import Path

import pytest

from chaosmessaging import faults

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "message_soak.json"

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(embedded_stack):
    return embedded_stack


def test_message_soak_smoke_holds_and_the_journal_shows_the_sampled_figures(stack, chaos_run):
    config = json.loads(EXPERIMENT.read_text())["configuration"]
    code, journal, output = chaos_run(EXPERIMENT)
    assert code == 0, output[-3000:]
    assert journal["status"] == "completed" and not journal["deviated"]
    after = {
        p["activity"]["name"]: p["output"] for p in journal["steady_states"]["after"]["probes"]
    }
    run = {r["activity"]["name"]: r for r in journal["run"]}

    sampled = run["sample-metrics-during-load"]["output"]
    expected_ticks = int(config["t1_duration_s"] // config["t1_sample_interval_s"]) + 1
    assert sampled["ticks"] == expected_ticks
    assert sampled["errors"] == {"api": 0, "dispatcher": 0, "consumer": 0}

    for probe, service in (
        ("consumer-lag-below-limit-throughout", "consumer"),
        ("dispatch-lag-below-limit-throughout", "dispatcher"),
    ):
        figures = after[probe]["services"][service]
        assert figures["samples"] == expected_ticks
        assert 0 <= figures["max"] < config["t1_max_lag_s"] and figures["over_limit"] == 0

    memory = after["memory-stable"]["services"]
    assert set(memory) == {"api", "dispatcher", "consumer"}
    for figures in memory.values():
        assert figures["first_mean_bytes"] > 10 * 2**20  # a real process's RSS, not a stub
        assert figures["growth_percent"] < config["t1_max_memory_growth_pct"]

    accounting = after["message-accounting-zero-loss"]
    expected = config["t1_rate"] * config["t1_duration_s"]
    assert accounting["lost"] == 0
    assert accounting["acknowledged"] == accounting["k6_accepted"] >= 0.95 * expected
    k6 = after["load-p95-and-error-rate-within-limits"]["loads"]["load"]["metrics"]
    assert k6["p95_ms"] < config["t1_p95_ms"] and k6["http_req_failed_rate"] < 0.01
    assert after["no-outbox-dead-letters"] == 0
    assert after["dead-letter-stream-did-not-grow"]["grew"] == 0
    assert faults.active(stack.home) == []


def test_message_soak_fails_when_the_memory_limit_is_below_what_the_run_measured(chaos_run):
    # a short healthy run judged with "no growth at all" (a service's RSS grows while a load
    # warms it up; a negative limit would be refused as a configuration error): proves
    # memory-stable is evaluated on the run's samples and fails the run
    code, journal, output = chaos_run(
        EXPERIMENT,
        "--var",
        "t1_duration_s:int=8",
        "--var",
        "t1_sample_interval_s:float=0.5",
        "--var",
        "t1_max_memory_growth_pct:float=0",
    )
    assert code != 0 and journal["deviated"], output[-3000:]
    memory = next(
        p
        for p in journal["steady_states"]["after"]["probes"]
        if p["activity"]["name"] == "memory-stable"
    )
    assert memory["tolerance_met"] is False
    assert memory["output"]["ok"] is False and len(memory["output"]["services"]) == 3

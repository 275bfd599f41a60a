"""experiments/cascading_failure.json (plan T11), smoke profile, through the real `chaos` CLI
against the session's embedded stack: PostgreSQL then Redis killed and restored under mixed load.
It holds on the reference stack, and fails when one service answers 500 instead of 503, or never
recovers after Redis comes back empty (that service restarted with the selfcheck's mutant,
`MSGSTACK_MUTANT`, health_500_when_degraded or health_sticky_redis)."""

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from chaosmessaging import faults
from chaosmessaging.stack import control
from chaosmessaging.stack.state import load_state, save_state

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "cascading_failure.json"
# a shorter timeline for the runs that only need the verdicts to fail
SHORT = ["--var", "t11_kill_pg_after_s:int=4", "--var", "t11_pg_alone_s:int=5",
         "--var", "t11_both_down_s:int=4", "--var", "t11_redis_alone_s:int=4",
         "--var", "t11_load_s:int=35", "--var", "t11_watch_s:int=32"]  # fmt: skip

pytestmark = pytest.mark.slow


def _after(journal: dict) -> dict:
    return {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}


@contextmanager
def broken(stack, service: str, mutant: str):
    """Run `service` of the session stack with `mutant` switched on (MSGSTACK_MUTANT) meanwhile."""
    state = load_state(stack.home)
    original = dict(state.service(service).env)
    state.service(service).env = {**original, "MSGSTACK_MUTANT": mutant}
    save_state(state)
    control.stop_service(service, "SIGTERM", state=state)
    control.start_service(service, state=state, timeout=60)
    try:
        yield
    finally:
        state = load_state(stack.home)
        state.service(service).env = original
        save_state(state)
        control.stop_service(service, "SIGTERM", state=state)
        control.start_service(service, state=state, timeout=60)


def test_cascading_failure_smoke_holds_on_the_reference_stack(embedded_stack, chaos_run):
    config = json.loads(EXPERIMENT.read_text())["configuration"]
    code, journal, output = chaos_run(EXPERIMENT, timeout=400)
    assert code == 0, output[-4000:]
    after = {name: p["output"] for name, p in _after(journal).items()}
    watched = after["readiness-answers-only-200-or-503"]["services"]
    assert set(watched) == {"auth", "api", "dispatcher", "consumer"}
    assert all(counts.get("503", 0) > 0 and counts.get("200", 0) > 0
               for counts in watched.values())  # fmt: skip
    for probe in ("postgres-outage-reported-by-every-service",
                  "redis-outage-reported-by-every-service"):  # fmt: skip
        assert all(f["reported"] > 0 and f["not_reported"] == 0
                   for f in after[probe]["services"].values())  # fmt: skip
    recovered = after["all-ready-within-limit-after-redis-returns-empty"]
    assert recovered["worst_s"] <= config["t11_recovery_limit_s"]
    accounting = after["message-accounting-zero-loss-zero-duplicates"]
    assert accounting["lost"] == 0 and accounting["duplicated"] == 0
    # a commit whose answer was lost with the server is stored without k6 counting its 202
    assert accounting["acknowledged"] >= accounting["k6_accepted"] > 0
    intact = after["message-bytes-intact"]
    assert intact["messages"] == accounting["acknowledged"] and intact["corrupted"] == 0
    assert after["loads-saw-no-server-errors"]["count"] == 0
    assert faults.active(embedded_stack.home) == []


def test_cascading_failure_fails_when_a_service_answers_500_during_the_outage(
    embedded_stack, chaos_run
):
    with broken(embedded_stack, "api", "health_500_when_degraded"):
        code, journal, output = chaos_run(EXPERIMENT, *SHORT, timeout=400)
    assert code != 0 and journal["deviated"], output[-4000:]
    answers = _after(journal)["readiness-answers-only-200-or-503"]
    assert answers["tolerance_met"] is False
    assert {b["service"] for b in answers["output"]["bad"]} == {"api"}
    assert {b["status"] for b in answers["output"]["bad"]} == {500}


def test_cascading_failure_fails_when_a_service_never_recovers_after_redis_returns_empty(
    embedded_stack, chaos_run, tmp_path
):
    with broken(embedded_stack, "dispatcher", "health_sticky_redis"):
        experiment = json.loads(EXPERIMENT.read_text())
        # judge recovery first: the other verdicts would stop the hypothesis earlier
        probes = experiment["steady-state-hypothesis"]["probes"]
        first = next(p for p in probes if p["name"].startswith("all-ready-within"))
        probes.remove(first)
        probes.insert(0, first)
        variant = tmp_path / "cascading_failure-recovery-first.json"
        variant.write_text(json.dumps(experiment))
        code, journal, output = chaos_run(variant, *SHORT, timeout=400)
    assert code != 0 and journal["deviated"], output[-4000:]
    recovery = _after(journal)["all-ready-within-limit-after-redis-returns-empty"]
    assert recovery["tolerance_met"] is False
    assert recovery["output"]["services"]["dispatcher"] is None
    assert all(v is not None for k, v in recovery["output"]["services"].items()
               if k != "dispatcher")  # fmt: skip

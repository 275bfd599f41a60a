"""`chaosmessaging selfcheck`: the mutant catalogue, the plan it makes, its verdict, and one
mutant plus the clean stack through the real CLI (real stacks, real `chaos run`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from chaosmessaging import selfcheck
from chaosmessaging.selfcheck import CATALOGUE, Mutant, Row

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("chaosmessaging"))


def test_every_experiment_has_at_least_two_mutants_and_every_mutant_an_experiment():
    experiments = sorted(p.stem for p in (ROOT / "experiments").glob("*.json"))
    assert len(experiments) >= 16
    for experiment in experiments:
        catching = [m.name for m in CATALOGUE if experiment in m.experiments]
        assert len(catching) >= 2, f"{experiment}: only {catching}"
    assert {e for m in CATALOGUE for e in m.experiments} <= set(experiments)


def test_every_mutant_has_its_switch_in_the_reference_stack_and_nothing_else_does():
    source = "".join(p.read_text() for p in (ROOT / "msgstack").rglob("*.py"))
    switches = set(re.findall(r'mutants\.on\("([a-z0-9_]+)"\)', source))
    once = set(re.findall(r'mutants\.once\("([a-z0-9_]+)"\)', source))
    assert switches | once == {m.name for m in CATALOGUE}
    # one-shot mutants strike once per process: once per stack, so one experiment each
    assert once == {m.name for m in CATALOGUE if m.one_shot}
    for m in (m for m in CATALOGUE if m.one_shot):
        assert m.environment() == {"MSGSTACK_MUTANT": m.name} and len(m.experiments) == 1
    assert "MSGSTACK_WS_SABOTAGE" not in source


def test_only_selects_a_mutant_and_the_clean_run_of_its_experiment():
    rows = selfcheck.plan(["consumer_no_reclaim"])
    assert [(r.mutant, r.experiment, r.expected) for r in rows] == [
        ("consumer_no_reclaim", "consumer_resilience", "deviated"),
        ("clean", "consumer_resilience", "completed"),
    ]
    by_experiment = selfcheck.plan(["redis_partition"])
    assert {r.mutant for r in by_experiment} == {
        "dispatcher_mark_on_failure",
        "dispatcher_no_replay",
        "clean",
    }
    everything = selfcheck.plan()
    experiments = len(list((ROOT / "experiments").glob("*.json")))
    assert len([r for r in everything if r.mutant == "clean"]) == experiments
    with pytest.raises(ValueError, match="unknown mutant or experiment nope"):
        selfcheck.plan(["nope"])


def test_the_catalogue_is_extended_by_registering_not_by_editing():
    mutant = Mutant("api_forgets", "api", "drops a message", ("message_soak",))
    selfcheck.register(mutant)
    try:
        assert ("api_forgets", "message_soak") in {
            (r.mutant, r.experiment) for r in selfcheck.plan(["api_forgets"])
        }
        with pytest.raises(ValueError, match="already in the catalogue"):
            selfcheck.register(mutant)
    finally:
        CATALOGUE.remove(mutant)


def test_a_surviving_mutant_or_a_failing_clean_stack_fails_the_selfcheck():
    caught = Row("m", "x", "deviated", actual="deviated")
    survived = Row("m2", "x", "deviated", actual="completed")
    clean = Row("clean", "x", "completed", actual="completed")
    clean_failed = Row("clean", "x", "completed", actual="deviated")
    assert selfcheck.conclusion([caught, clean])[0] == 0
    code, lines = selfcheck.conclusion([caught, survived, clean])
    assert code == 1 and "m2 x x (completed)" in lines[0]
    code, lines = selfcheck.conclusion([caught, clean_failed])
    assert code == 1 and "the clean stack failed 1 experiment(s): x (deviated)" in lines[0]
    assert [survived.verdict, caught.verdict, clean_failed.verdict] == ["NO", "yes", "FAILS"]
    assert "m2      x           deviated  completed  NO" in selfcheck.table([caught, survived])


@pytest.mark.slow
# two stacks, two runs of ten kills each; every restart now waits for readiness (target
# backends): the suite's 300 s is too short for the 900 s the selfcheck itself is allowed
@pytest.mark.timeout(900)
def test_selfcheck_catches_a_mutant_and_passes_the_clean_stack_through_the_cli():
    # short (PostgreSQL socket paths) and unique (another checkout may run this test too)
    workdir = Path(tempfile.mkdtemp(prefix="cm-sc-", dir="/tmp"))
    try:
        done = subprocess.run(
            [CLI, "selfcheck", "--only", "consumer_no_reclaim", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "[1/2] consumer_no_reclaim x consumer_resilience" in done.stdout  # live progress
        assert "Action: kill-consumer-at-random-moments" in done.stdout
        rows = {
            (r["mutant"], r["experiment"]): r
            for r in json.loads((workdir / "selfcheck.json").read_text())
        }
        mutant = rows[("consumer_no_reclaim", "consumer_resilience")]
        assert mutant["actual"] == "deviated" and mutant["caught"] == "yes"
        assert mutant["breached"], "a breached probe names how it was caught"
        assert rows[("clean", "consumer_resilience")]["actual"] == "completed"
        journal = json.loads(Path(rows[("clean", "consumer_resilience")]["journal"]).read_text())
        kills = next(
            r["output"]
            for r in journal["run"]
            if r["activity"]["name"] == "kill-consumer-at-random-moments"
        )
        assert len(kills["kills"]) == selfcheck.SELFCHECK_VARS["consumer_resilience"]["t8_kills"]
        assert "every mutant caught, the clean stack passes" in done.stdout
        assert not list(workdir.glob("*/stack.json")), "every stack is stopped"
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)

"""The experiments, run by the real `chaos` CLI against a private embedded stack.

They pass on a healthy pipeline (smoke profile), and their verdicts fail — naming what was lost —
when messages really are lost behind the pipeline's back (tests/support/sabotage.py).
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from chaosmessaging import faults
from conftest import CHAOS, chaos_env

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(embedded_stack):
    return embedded_stack


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


def _insert_after(experiment: dict, activity: str, new: dict) -> None:
    names = [a["name"] for a in experiment["method"]]
    experiment["method"].insert(names.index(activity) + 1, new)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.json")), ids=lambda p: p.stem)
def test_every_experiment_validates(path):
    proc = subprocess.run(
        [CHAOS, "--no-log-file", "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_experiments_share_one_shape_and_nightly_sets_every_tunable():
    """One source per value: an experiment's own values are its smoke profile, nightly.json
    overrides exactly those keys; no env entries (lookup reads the environment); the one
    standard control (safety net included) in every experiment; every verdict judged by `$.ok`."""
    nightly = json.loads((EXPERIMENTS / "profiles" / "nightly.json").read_text())["configuration"]
    seen = set()
    for path in EXPERIMENTS.glob("*.json"):
        experiment = json.loads(path.read_text())
        config = experiment["configuration"]
        assert config and all(not isinstance(v, dict) for v in config.values()), path.name
        missing = set(config) - set(nightly)
        assert not missing, f"{path.name}: no nightly value for {sorted(missing)}"
        seen |= set(config)
        assert [c["provider"]["module"] for c in experiment["controls"]] == [
            "chaosmessaging.controls.standard"
        ], path.name
        assert experiment["runtime"]["rollbacks"]["strategy"] == "always", path.name
        for probe in experiment["steady-state-hypothesis"]["probes"]:
            tolerance = probe["tolerance"]
            if (
                isinstance(tolerance, dict)
                and tolerance.get("type") == "jsonpath"
                and "expect" in tolerance
            ):
                assert tolerance == {"type": "jsonpath", "path": "$.ok", "expect": True}, (
                    f"{path.name}: {probe['name']}"
                )
    assert set(nightly) <= seen, f"nightly.json keys no experiment uses: {set(nightly) - seen}"


def test_experiment_files_are_in_the_projects_json_style():
    proc = subprocess.run(
        ["python3", str(ROOT / "scripts" / "format_experiments.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_consumer_resilience_smoke_holds_on_a_healthy_pipeline(stack, chaos_run, tmp_path):
    code, journal, output = chaos_run(EXPERIMENTS / "consumer_resilience.json")
    assert code == 0, output[-3000:]
    assert journal["status"] == "completed" and not journal["deviated"]
    after = _after(journal)
    reclaimed = after["entries-pending-at-kill-reclaimed"]["output"]
    assert reclaimed["pending_at_fault"] > 0, "the consumer must die holding entries"
    assert reclaimed["reclaimed"] == reclaimed["pending_at_fault"]
    kills = after["entries-pending-at-each-random-kill-reclaimed"]["output"]
    assert len(kills["kills"]) == 4 and kills["seed"]  # the smoke profile's random kills
    assert all(k["reclaimed"] == k["pending_at_kill"] for k in kills["kills"])
    assert {k["down_vs_reclaim"] for k in kills["kills"]} == {"shorter", "longer"}
    accounting = after["message-accounting-zero-loss"]["output"]
    assert accounting["lost"] == 0 and accounting["acknowledged"] == accounting["k6_accepted"] > 0
    assert faults.active(stack.home) == []


def test_a_catch_up_kill_after_the_load_ended_is_a_rig_failure_not_a_deviation(
    stack, chaos_run, tmp_path
):
    """The load (2 s) ends long before the catch-up kill: finding no backlog is the schedule's
    fault, not the consumer's: exit 3, not deviated, the consumer running again."""

    def edit(e):
        e["configuration"].update(t8_messages=200, t8_kill_after_s=3, t8_down_for_s=1, t8_kills=1)

    started = time.monotonic()
    code, journal, output = chaos_run(_variant(tmp_path, "consumer_resilience", edit))
    assert code == 3, output[-3000:]
    assert journal["deviated"] is False and journal["status"] == "failed"
    failures = journal["chaosmessaging_rig_failure"]["failures"]
    assert any("load had already ended" in f for f in failures), failures
    assert time.monotonic() - started < 60, "it waited out the whole catch-up timeout"
    assert faults.active(stack.home) == []
    consumer = stack.services["consumer"]
    assert httpx.get(consumer.address + consumer.ready, timeout=5).status_code == 200


def test_consumer_resilience_fails_and_names_ids_when_deliveries_vanish(stack, chaos_run, tmp_path):
    def edit(e):
        e["configuration"].update(t8_messages=2500, t8_kill_after_s=3, t8_down_for_s=3, t8_kills=1)
        e["method"].append(_sabotage("drop-three-deliveries", "drop_deliveries"))

    code, journal, output = chaos_run(_variant(tmp_path, "consumer_resilience", edit))
    assert code != 0
    assert journal["deviated"]
    dropped = next(
        r["output"] for r in journal["run"] if r["activity"]["name"] == "drop-three-deliveries"
    )
    assert len(dropped) == 3
    accounting = _after(journal)["message-accounting-zero-loss"]
    assert accounting["tolerance_met"] is False
    assert accounting["output"]["lost"] == 3
    assert sorted(accounting["output"]["lost_ids"]) == sorted(dropped)


def test_consumer_resilience_fails_when_pending_entries_are_dropped(stack, chaos_run, tmp_path):
    def edit(e):
        e["configuration"].update(t8_messages=2500, t8_kill_after_s=3, t8_down_for_s=3, t8_kills=1)
        _insert_after(
            e,
            "restart-consumer-and-kill-it-mid-batch",
            _sabotage("ack-pending-without-delivery", "ack_pending_without_delivery"),
        )

    code, journal, output = chaos_run(_variant(tmp_path, "consumer_resilience", edit))
    assert code != 0 and journal["deviated"]
    run = {r["activity"]["name"]: r["output"] for r in journal["run"]}
    assert run["restart-consumer-and-kill-it-mid-batch"]["killed"] is True
    dropped = run["ack-pending-without-delivery"]
    assert dropped > 0
    # the hypothesis stops at its first breached probe: accounting, which names the lost ids
    accounting = _after(journal)["message-accounting-zero-loss"]
    assert accounting["tolerance_met"] is False
    assert accounting["output"]["lost"] == dropped
    assert len(accounting["output"]["lost_ids"]) == min(dropped, 50)
    assert faults.active(stack.home) == []


def test_redis_partition_smoke_parks_replays_and_loses_nothing(stack, chaos_run, tmp_path):
    code, journal, output = chaos_run(EXPERIMENTS / "redis_partition.json")
    assert code == 0, output[-3000:]
    run = {r["activity"]["name"]: r for r in journal["run"]}
    assert run["dispatcher-readiness-during-partition"]["output"]["status_code"] == 503
    assert run["outbox-dlq-during-partition"]["output"] > 0
    assert run["pipeline-caught-up"]["output"]["recovered"] is True
    assert faults.active(stack.home) == []


def test_redis_latency_smoke_sees_p95_degrade_and_recover(chaos_run):
    code, journal, output = chaos_run(EXPERIMENTS / "redis_latency.json")
    assert code == 0, output[-3000:]
    verdict = _after(journal)["latency-degraded-then-recovered"]["output"]
    phases = verdict["phases"]
    assert phases["degraded"]["p95_ms"] > phases["baseline"]["p95_ms"] + 100
    assert verdict["back_to_baseline"] is True


def test_interrupted_partition_run_leaves_no_fault_behind(stack, tmp_path):
    """SIGINT while Redis is partitioned: the run stops and the proxy is enabled again."""
    env = chaos_env(stack)
    proc = subprocess.Popen(
        [
            CHAOS,
            "--log-file",
            str(tmp_path / "chaos.log"),
            "run",
            "--journal-path",
            str(tmp_path / "j.json"),
            str(EXPERIMENTS / "redis_partition.json"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any(f.kind == "proxy_disabled" for f in faults.active(stack.home)):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the partition fault was never recorded")
    k6_pids = [f.revert["pid"] for f in faults.active(stack.home) if f.kind == "load"]
    assert k6_pids, "the load should be running during the partition"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) != 0
    assert faults.active(stack.home) == []
    proxy = httpx.get(f"{stack.services['proxy'].address}/proxies/redis", timeout=5).json()
    assert proxy["enabled"] is True
    assert not [
        pid
        for pid in k6_pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]

"""`chaosmessaging check-platform`: live checks against a real embedded stack, and a table that is
derived from the experiments and the platform file (runnable / needs ... / n/a with a reason)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chaosmessaging.platform import load_platform
from chaosmessaging.needs.check import RUN, experiment_rows
from chaosmessaging.resources import bundled

CLI = str(Path(sys.executable).with_name("chaosmessaging"))
REFERENCE = bundled("platforms") / "reference.yaml"
EXPERIMENTS = bundled("experiments")


def _cli(
    *args: str, home: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    env.pop("CHAOSMESSAGING_PLATFORM", None)
    if home:
        env["CHAOSMESSAGING_HOME"] = home
    return subprocess.run(
        [CLI, "check-platform", *args], capture_output=True, text=True, timeout=120, env=env
    )


def _without(tmp_path: Path, *drop: str, services: tuple[str, ...] = ()) -> Path:
    """The reference platform file minus some sections/services (another platform's shape)."""
    doc = yaml.safe_load(REFERENCE.read_text())
    for key in drop:
        doc.pop(key, None)
    for name in services:
        doc["services"].pop(name)
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_on_the_reference_stack_every_experiment_and_criterion_is_runnable(embedded_stack):
    result = _cli(home=embedded_stack.home)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for check in ("api readiness", "login", "conversation create", "conversation get", "send"):
        assert f"ok   {check}:" in out, out
    assert "conversation list: GET /v1/conversations -> HTTP 200, lists it" in out
    assert "conversation delete: DELETE /v1/conversations/{conversation_id} -> HTTP 204" in out
    rows = [line for line in out.splitlines() if line.split()[:1] and " (run) " in line]
    assert len(rows) == len(list(EXPERIMENTS.glob("*.json"))) == 16
    table = out[out.index("experiment  ") :]
    assert " needs " not in table and " n/a " not in table, table
    assert "16 of 16 experiments can run; 0 criteria do not apply to this platform" in out


def test_a_platform_without_delivery_ledger_or_consumer_gets_na_with_reasons(tmp_path):
    other = _without(tmp_path, "delivery", "evidence", "endpoints", services=("consumer",))
    platform = load_platform(other)
    config = {"messaging_redis_url": "redis://127.0.0.1:1/0"}
    rows = {
        (r.experiment, r.criterion): r.status
        for path in sorted(EXPERIMENTS.glob("*.json"))
        for r in experiment_rows(path, platform, config)
    }
    delivery = rows[("mixed_load", "every-message-reached-every-device")]
    assert (delivery.state, delivery.why) == (
        "n/a",
        "the platform file describes no delivery channel (delivery:)",
    )
    assert rows[("mixed_load", RUN)].state == "n/a"
    ledger = rows[("cascading_failure", "message-bytes-intact")]
    assert ledger.state == "n/a" and "describes no evidence" in ledger.why
    consumer = rows[("consumer_resilience", RUN)]
    assert consumer.state == "n/a" and "no service 'consumer'" in consumer.why
    t7 = rows[("multi_adapter_soak", RUN)]
    assert t7.state == "n/a" and "storage_event" in t7.why
    # what does not depend on the missing parts stays runnable
    assert rows[("sustained_login", RUN)].state == "runnable"
    assert rows[("conversation_stress", "stale-updates-conflict")].state == "runnable"


def test_a_metric_mapped_to_null_makes_its_criteria_na(tmp_path):
    doc = yaml.safe_load(REFERENCE.read_text())
    doc["metrics"]["ws_overload_total"] = None
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    rows = {
        r.criterion: r.status
        for r in experiment_rows(EXPERIMENTS / "large_payload.json", load_platform(path))
    }
    assert rows["no-backpressure-drop"].state == "n/a"
    assert "metrics.ws_overload_total" in rows["no-backpressure-drop"].why
    assert rows["every-large-message-arrived-byte-exact"].state == "runnable"


def test_needs_says_exactly_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAOSMESSAGING_REDIS_URL", raising=False)
    platform = load_platform(REFERENCE)
    rows = {
        r.criterion: r.status
        for r in experiment_rows(
            EXPERIMENTS / "consumer_resilience.json",
            platform,
            {"chaosmessaging_home": str(tmp_path), "messaging_redis_url": None},
        )
    }
    run = rows[RUN]
    assert run.state == "needs"
    expected = "set CHAOSMESSAGING_REDIS_URL (or the configuration key 'messaging_redis_url')"
    assert expected in run.why
    # a criterion of an experiment that cannot run is not "runnable" either, and says why
    ready = rows["api-is-ready"]
    assert ready.state == "needs" and ready.why.startswith("the experiment cannot run: set ")


def test_a_network_fault_needs_a_toxiproxy_the_user_named_and_the_dependency_it_fronts(
    tmp_path, monkeypatch
):
    """A platform with no proxy configured (Matrix, a user's staging) is not "runnable" for a
    partition just because a default address exists: it says what to set."""
    for name in ("CHAOSMESSAGING_TOXIPROXY_URL", "CHAOSMESSAGING_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    platform = load_platform(REFERENCE)
    home = {"chaosmessaging_home": str(tmp_path)}  # no stack there
    for name in ("redis_partition", "redis_latency"):
        run = dict(
            (r.criterion, r.status)
            for r in experiment_rows(EXPERIMENTS / f"{name}.json", platform, home)
        )[RUN]
        assert run.state == "needs" and "set CHAOSMESSAGING_TOXIPROXY_URL" in run.why, run
    named = {**home, "toxiproxy_url": "http://127.0.0.1:8474"}
    run = dict(
        (r.criterion, r.status)
        for r in experiment_rows(EXPERIMENTS / "redis_partition.json", platform, named)
    )[RUN]
    assert run.state == "needs" and "set CHAOSMESSAGING_REDIS_URL" in run.why, run


def test_live_a_proxy_that_fronts_another_redis_is_not_runnable(embedded_stack):
    """Live, check-platform asks the Toxiproxy: the stack's proxy 'redis' fronts the stack's
    Redis, not the one configured here, so a partition through it would hit the wrong system."""
    env = {"CHAOSMESSAGING_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = _cli("--only", "redis_partition", home=embedded_stack.home, env=env)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    (run,) = [
        line for line in out.splitlines() if line.startswith("redis_partition") and "(run)" in line
    ]
    assert " needs " in run and "does not front the configured dependency" in run, run


def test_a_requested_experiment_that_cannot_run_exits_non_zero(tmp_path):
    other = _without(tmp_path, "delivery")
    result = _cli("--platform", str(other), "--offline", "--only", "mixed_load,sustained_login")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: requested experiment(s) cannot run: mixed_load" in result.stdout
    ok = _cli("--platform", str(other), "--offline", "--only", "sustained_login")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_an_invalid_platform_file_or_unknown_experiment_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nservices: {}\n")
    result = _cli("--platform", str(bad), "--offline")
    assert result.returncode == 1
    assert result.stdout.startswith(f"error: platform file {bad}: services: ")
    unknown = _cli("--offline", "--only", "no_such_experiment")
    assert unknown.returncode == 1 and "unknown experiment(s) no_such_experiment" in unknown.stdout


@pytest.mark.parametrize("force", [False, True])
def test_init_platform_copies_a_template_that_validates(tmp_path, force):
    target = tmp_path / "mine"
    cmd = [CLI, "init", str(target), "--platform"] + (["--force"] if force else [])
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "experiments" / "message_soak.json").exists()
    template = target / "platform.yaml"
    assert load_platform(template).name == "my-platform"
    again = subprocess.run(
        [CLI, "init", str(target), "--platform"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "already exists; pass --force" in again.stdout


def test_t2_runs_with_what_the_platform_has_and_t3_reads_through_either_operation(tmp_path):
    """The T2 script skips what a platform lacks, so its run needs only conversations.create (and
    a cache header while the experiment sets cache-latency limits); T3's read after a removal
    may be participants.list or conversations.get, whichever is refused to a removed member."""
    doc = yaml.safe_load(REFERENCE.read_text())
    for name in ("list", "update", "delete"):
        doc["conversations"].pop(name)
    doc["services"]["api"].pop("cache_header")
    doc["conversations"]["get"]["forbidden"] = []
    path = tmp_path / "lean.yaml"
    path.write_text(yaml.safe_dump(doc))
    platform = load_platform(path)
    t2 = {
        r.criterion: r.status
        for r in experiment_rows(EXPERIMENTS / "conversation_stress.json", platform)
    }
    assert t2[RUN].state == "needs" and "cache_header" in t2[RUN].why, t2[RUN]
    assert t2["stale-updates-conflict"].state == "n/a"
    t3 = {
        r.criterion: r.status
        for r in experiment_rows(EXPERIMENTS / "participant_invalidation.json", platform)
    }
    assert t3[RUN].state == "runnable", t3[RUN]  # participants.list answers 403 to a non-member
    assert t3["no-stale-read-after-a-removal"].state == "runnable"
    doc["participants"]["list"]["forbidden"] = []
    path.write_text(yaml.safe_dump(doc))
    t3 = {
        r.criterion: r.status
        for r in experiment_rows(EXPERIMENTS / "participant_invalidation.json", load_platform(path))
    }
    assert t3[RUN].state == "n/a" and "participants.list has no 'forbidden'" in t3[RUN].why

"""What the rig adds to the system it measures, by configuration (issue 21): the fault proxy only
on the path of a suite that injects network faults, k6 and the stack on CPU sets of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaosmessaging.nightly import catalog, runner
from chaosmessaging.stack import pinning

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _entries(*names: str) -> list[catalog.Entry]:
    return catalog.discover(EXPERIMENTS, only=list(names))


def test_the_proxy_fronts_only_the_dependencies_a_suite_injects_network_faults_on(monkeypatch):
    monkeypatch.delenv(runner.PROXY_ENV, raising=False)
    nightly = catalog.profile_values("nightly", EXPERIMENTS)[1]
    assert runner.proxied_dependencies(_entries("message_soak", "consumer_resilience")) == ()
    both = _entries("message_soak", "redis_partition", "redis_latency")
    assert runner.proxied_dependencies(both) == ("redis",)
    assert runner.proxied_dependencies(both, nightly) == ("redis",)
    # a profile that points T9 at PostgreSQL's proxy gets that one fronted too
    assert runner.proxied_dependencies(both, {**nightly, "t9_proxy": "postgres"}) == (
        "redis",
        "postgres",
    )
    monkeypatch.setenv(runner.PROXY_ENV, "always")
    assert runner.proxied_dependencies(_entries("message_soak")) == ("redis", "postgres")


def test_a_proxy_name_the_suite_cannot_resolve_fronts_every_dependency(tmp_path, monkeypatch):
    """Never a stack without the proxy an experiment needs: an unresolved `${key}` or a name
    the embedded stack does not know fronts both dependencies."""
    monkeypatch.delenv(runner.PROXY_ENV, raising=False)
    doc = json.loads((EXPERIMENTS / "redis_partition.json").read_text())
    (tmp_path / "profiles").mkdir()
    for proxy, expected in (
        ("${nowhere}", ("redis", "postgres")),
        ("kafka", ("redis", "postgres")),
    ):
        text = json.dumps(doc).replace('"${t9_proxy}"', json.dumps(proxy))
        (tmp_path / "redis_partition.json").write_text(text)
        entries = catalog.discover(tmp_path, only=["redis_partition"])
        assert runner.proxied_dependencies(entries) == expected, proxy


def test_a_stack_fronting_redis_only_sends_postgres_traffic_direct(tmp_path):
    """`launcher.up(with_proxy=("redis",))`: the services dial Redis through the fault proxy
    (which fronts nothing else) and PostgreSQL at its own port."""
    from chaosmessaging.stack import launcher, servers

    state = launcher.up(tmp_path / "home", with_proxy=("redis",), proxy_port=servers.free_port())
    try:
        redis, postgres = state.services["redis"], state.services["postgres"]
        assert redis.address != redis.direct_address
        assert postgres.address == postgres.direct_address
        fronted = json.loads((tmp_path / "home" / "proxy.json").read_text())
        assert [p["name"] for p in fronted] == ["redis"]
        api = state.services["api"].env
        assert str(postgres.port) in api["MSGSTACK_PG_DSN"]
        assert str(redis.port) not in api["MSGSTACK_REDIS_URL"]
    finally:
        launcher.down(tmp_path / "home", purge=True)
    with pytest.raises(launcher.StackError, match="cannot front 'kafka'"):
        launcher.proxied(("kafka",))


def test_every_experiment_using_the_proxy_api_is_recognised():
    """No experiment reaches the proxy other than through the network-fault actions, so
    `proxied_dependencies` cannot start a stack without the proxy an experiment needs."""
    for path in EXPERIMENTS.glob("*.json"):
        text = path.read_text()
        if "toxiproxy" in text.replace(runner.NETWORK_FAULT_MODULE, ""):
            assert runner.NETWORK_FAULT_MODULE in text, path.name


def test_cpu_lists_parse_like_taskset_and_refuse_what_cannot_be_used():
    allowed = sorted(os.sched_getaffinity(0))
    first = allowed[0]
    assert pinning.parse_cpus(f"{first}", "X") == {first}
    assert pinning.parse_cpus(",".join(map(str, allowed)), "X") == set(allowed)
    for bad in ("a", "1-0", "-1", "", "99999"):
        with pytest.raises(ValueError, match="X="):
            pinning.parse_cpus(bad, "X")


def test_a_pinned_child_runs_on_its_cpu_set_only(monkeypatch):
    cpu = sorted(os.sched_getaffinity(0))[-1]
    monkeypatch.setenv(pinning.K6_CPUS, str(cpu))
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pinning.pin_child(pinning.K6_CPUS),
    )
    assert done.stdout.strip() == f"[{cpu}]"
    monkeypatch.delenv(pinning.K6_CPUS)
    assert pinning.pin_child(pinning.K6_CPUS) is None


def test_k6_runs_with_a_raised_collector_target_unless_the_user_set_one():
    env = pinning.k6_environment({"PATH": "/bin"}, LOGIN_PASSWORD="pw")
    assert env == {
        "PATH": "/bin",
        "K6_NO_USAGE_REPORT": "true",
        "GOGC": pinning.K6_GOGC,
        "GOMEMLIMIT": pinning.K6_GOMEMLIMIT,
        "LOGIN_PASSWORD": "pw",
    }
    mine = pinning.k6_environment({"GOGC": "100", "GOMEMLIMIT": "512MiB"})
    assert (mine["GOGC"], mine["GOMEMLIMIT"]) == ("100", "512MiB")


def test_the_pipeline_services_run_at_the_configured_niceness_and_nothing_else_does(monkeypatch):
    monkeypatch.setenv(pinning.PIPELINE_NICE, "7")
    monkeypatch.delenv(pinning.STACK_CPUS, raising=False)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    niceness = {}
    for service in ("consumer", "api"):
        done = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=pinning.stack_child(service),
        )
        niceness[service] = int(done.stdout)
    assert niceness == {"consumer": min(base + 7, 19), "api": base}
    for bad in ("-1", "20", "high"):
        monkeypatch.setenv(pinning.PIPELINE_NICE, bad)
        with pytest.raises(ValueError, match=pinning.PIPELINE_NICE):
            pinning.stack_child("dispatcher")


def test_a_suite_that_starts_its_stack_seeds_the_users_its_profile_asks_for(monkeypatch):
    """The nightly profile's T12/T14 ask for 100 users; the stack seeds 50 unless told: the
    suite tells it (and every `chaos run`), rather than failing them as configuration errors."""
    nightly = catalog.profile_values("nightly", EXPERIMENTS)[1]
    entries = _entries("message_soak", "multi_user_conversation", "websocket_longevity")
    assert runner.users_needed(entries, nightly) == 100
    assert runner.users_needed(_entries("message_soak"), nightly) == 0
    said = []
    _unset(monkeypatch, runner.USERS_ENV)
    assert runner._seed_enough_users(entries, nightly, said.append)
    assert os.environ[runner.USERS_ENV] == "100" and "seeding 100" in said[0]
    # the user's own setting wins; a suite that needs no more than the default changes nothing
    monkeypatch.setenv(runner.USERS_ENV, "60")
    assert not runner._seed_enough_users(entries, nightly, said.append)
    monkeypatch.delenv(runner.USERS_ENV)
    assert not runner._seed_enough_users(_entries("message_soak"), nightly, said.append)
    assert runner.USERS_ENV not in os.environ


def test_a_suite_that_starts_its_stack_nices_the_pipeline_unless_told_otherwise(monkeypatch):
    said = []
    _unset(monkeypatch, pinning.PIPELINE_NICE)
    assert runner._nice_the_pipeline(said.append)
    assert os.environ[pinning.PIPELINE_NICE] == str(runner.SUITE_PIPELINE_NICE)
    assert "niceness" in said[0]
    monkeypatch.setenv(pinning.PIPELINE_NICE, "0")  # the user's choice, even "off", stands
    assert not runner._nice_the_pipeline(said.append)
    assert os.environ[pinning.PIPELINE_NICE] == "0"


def _unset(monkeypatch, name: str) -> None:
    """Unset `name` for this test so that teardown puts back what was there before, whatever
    the code under test sets meanwhile (`delenv` of an absent variable records nothing: a value
    the code set would then outlive the test and reach every later `chaos run` of the worker)."""
    monkeypatch.setenv(name, "-")
    monkeypatch.delenv(name)

"""What the rig adds to the system it measures, by configuration (issue 21): the fault proxy only
on the path of a suite that injects network faults, k6 and the stack on CPU sets of their own."""

from __future__ import annotations

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


def test_the_proxy_is_on_the_path_only_when_a_suite_injects_a_network_fault(monkeypatch):
    monkeypatch.delenv(runner.PROXY_ENV, raising=False)
    assert not runner.needs_proxy(_entries("message_soak", "consumer_resilience"))
    assert runner.needs_proxy(_entries("message_soak", "redis_partition"))
    assert runner.needs_proxy(_entries("redis_latency"))
    monkeypatch.setenv(runner.PROXY_ENV, "always")
    assert runner.needs_proxy(_entries("message_soak"))


def test_every_experiment_using_the_proxy_api_is_recognised():
    """No experiment reaches the proxy other than through the network-fault actions, so
    `needs_proxy` cannot start a stack without the proxy for an experiment that needs it."""
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

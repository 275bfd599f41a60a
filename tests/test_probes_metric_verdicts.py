"""Histogram-quantile and counter-ratio verdicts (plan T6's token p95 and login success rate)
over a real prometheus-client /metrics endpoint: only what happened after the snapshot counts."""

import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from chaosmessaging import runs
from chaosmessaging.probes import marks, metrics
from chaosmessaging.stack.servers import free_port


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    registry = CollectorRegistry()
    latency = Histogram(
        "token_latency", "t", buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25), registry=registry
    )
    attempts = Counter("logins_attempts", "a", registry=registry)
    success = Counter("logins_success", "s", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    config = {
        "chaosmessaging_home": str(tmp_path),
        "messaging_auth_url": f"http://127.0.0.1:{port}",
    }
    yield config, latency, attempts, success
    server.shutdown()
    server.server_close()
    thread.join(5)


def _p95(config, limit=0.05):
    return metrics.histogram_quantile_within(
        "t6", "token_latency", limit, service="auth", configuration=config
    )


def _ratio(config):
    return metrics.counter_ratio_at_least(
        "t6",
        "logins_success_total",
        "logins_attempts_total",
        0.999,
        service="auth",
        configuration=config,
    )


def test_verdicts_hold_before_the_method_and_fail_without_a_snapshot_after(endpoint):
    config = endpoint[0]
    assert _p95(config)["ok"] is True and _ratio(config)["ok"] is True
    marks.mark("method", configuration=config)
    for result in (_p95(config), _ratio(config)):
        assert result["ok"] is False and "snapshot_metrics(label='t6')" in result["reason"]


def test_p95_is_judged_on_observations_since_the_snapshot_and_fails_when_slow(endpoint):
    config, latency, _, _ = endpoint
    marks.mark("method", configuration=config)
    for _ in range(1000):
        latency.observe(1.0)  # before the snapshot: not this run's
    metrics.snapshot_metrics("t6", service="auth", configuration=config)
    assert _p95(config)["ok"] is False  # nothing observed since: nothing proves the limit
    for _ in range(100):
        latency.observe(0.008)
    for _ in range(5):
        latency.observe(0.2)
    fast = _p95(config)
    assert fast["ok"] is True and fast["observations"] == 105
    assert 0.005 < fast["value"] <= 0.01
    for _ in range(50):
        latency.observe(0.2)
    slow = _p95(config)
    assert slow["ok"] is False and 0.1 < slow["value"] <= 0.25
    assert "token_latency p95" in slow["reason"]


def test_success_ratio_counts_only_the_run_and_fails_below_the_minimum(endpoint):
    config, _, attempts, success = endpoint
    marks.mark("method", configuration=config)
    attempts.inc(500)  # failures before the snapshot do not count
    metrics.snapshot_metrics("t6", service="auth", configuration=config)
    nothing = _ratio(config)
    assert nothing["ok"] is False and "did not grow" in nothing["reason"]
    attempts.inc(1000)
    success.inc(1000)
    assert _ratio(config)["ok"] is True
    attempts.inc(10)  # ten failed logins: 1000 / 1010 < 0.999
    breached = _ratio(config)
    assert breached["ok"] is False
    assert breached["numerator_grew"] == 1000 and breached["denominator_grew"] == 1010

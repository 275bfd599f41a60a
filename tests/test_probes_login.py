"""The T6 login verdict against a reference KDF timed on this machine: real argon2id hashes, a
real prometheus-client histogram served over HTTP as the auth service's, and a k6 summary file in
k6's --summary-export format (the figures a login load reports)."""

import json
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram, start_http_server

from chaosmessaging import runs
from chaosmessaging.probes import login, marks, metrics
from chaosmessaging.stack.servers import free_port

BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@pytest.fixture
def auth(tmp_path, monkeypatch):
    """A run home and an auth-like /metrics endpoint with a token latency histogram."""
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    registry = CollectorRegistry()
    histogram = Histogram(
        "auth_token_generation_latency", "token latency", buckets=BUCKETS, registry=registry
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    config = {
        "chaosmessaging_home": str(tmp_path),
        "messaging_auth_url": f"http://127.0.0.1:{port}",
    }
    yield config, histogram
    server.shutdown()
    server.server_close()
    thread.join(5)


def _load(config: dict, tmp_path, median_ms: float) -> None:
    summary = tmp_path / "logins.json"
    summary.write_text(
        json.dumps({"metrics": {"http_req_duration": {"med": median_ms, "p(95)": 3 * median_ms}}})
    )
    info = {"label": "logins", "summary_path": str(summary), "started_at": time.time()}
    runs.record("load:logins", info, home=config["chaosmessaging_home"])


def test_the_reference_is_a_real_argon2id_hash_and_rounds_add_up(auth):
    config, _ = auth
    first = login.kdf_reference("t6", rounds=2, configuration=config)
    again = login.kdf_reference("t6", rounds=1, configuration=config)
    assert len(first["seconds"]) == 2 and len(again["seconds"]) == 3
    assert 0.001 < again["median_s"] < 5.0  # m=19 MiB t=2: milliseconds, never nothing


def test_a_login_six_kdfs_long_fails_one_kdf_long_passes(auth, tmp_path):
    config, histogram = auth
    marks.mark("method", configuration=config)
    metrics.snapshot_metrics("t6", service="auth", prefix="auth_", configuration=config)
    runs.record("kdf:t6", [0.02, 0.02, 0.02], home=config["chaosmessaging_home"])  # 20 ms
    for _ in range(50):
        histogram.observe(0.028)  # about 1.4 KDFs, as the clean stack measured
    _load(config, tmp_path, median_ms=30)
    ok = login.login_latency_within_reference(3, reference="t6", configuration=config)
    assert ok["ok"] is True and ok["ratio"] == 1.5 and ok["limit_ms"] == 60.0, ok
    for _ in range(200):
        histogram.observe(0.2)  # six verifications and some waiting
    _load(config, tmp_path, median_ms=130)
    slow = login.login_latency_within_reference(3, reference="t6", configuration=config)
    assert slow["ok"] is False and slow["ratio"] == 6.5, slow
    assert "clients saw a login p50 of 130 ms" in slow["reason"]
    assert "the service measured a token p50" in slow["reason"]


def test_without_a_reference_the_verdict_says_what_to_add(auth):
    config, _ = auth
    marks.mark("method", configuration=config)
    judged = login.login_latency_within_reference(3, reference="t6", configuration=config)
    assert judged["ok"] is False and "kdf_reference(label='t6')" in judged["reason"]

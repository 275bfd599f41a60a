"""The target model: which backend reaches a service, what an identity compares, and the process
backend's contract on a real embedded stack (the docker backend's runs in test_docker_stack.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from chaosmessaging import faults, runs
from chaosmessaging.backends import (
    BACKEND_ENV,
    BACKENDS_ENV,
    BackendError,
    Identity,
    NotSupported,
    backend_for,
    backend_name,
)
from chaosmessaging.backends.docker import DockerBackend
from chaosmessaging.backends.process import ProcessBackend
from chaosmessaging.probes.process import no_crash, snapshot_identities
from chaosmessaging.stack.control import spawn
from chaosmessaging.stack.health import wait_healthy, wait_ready
from chaosmessaging.stack.servers import ServerError, free_port
from chaosmessaging.stack.state import ServiceRecord
from chaosmessaging.targets import TargetRefused


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (BACKEND_ENV, BACKENDS_ENV, "CHAOSMESSAGING_DOCKER_HOST", "DOCKER_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path / "nohome"))


def test_backend_choice_override_then_setting_then_environment_then_process(clean_env, monkeypatch):
    assert backend_name("api") == "process"
    monkeypatch.setenv(BACKEND_ENV, "docker")
    assert backend_name("api") == "docker"
    assert backend_name("api", {"target_backend": "kubernetes"}) == "kubernetes"
    monkeypatch.setenv(BACKENDS_ENV, "postgres=process, redis=process")
    assert backend_name("postgres") == "process" and backend_name("consumer") == "docker"
    assert backend_name("api", {"target_backends": {"api": "process"}}) == "process"
    with pytest.raises(BackendError, match="unknown target backend 'podman'.*process, docker"):
        backend_name("api", {"target_backend": "podman"})


def test_an_identity_is_the_same_incarnation_only_with_the_same_start_and_restarts():
    one = Identity("docker", "consumer", "abc", "2026-12-06T05:00:00Z", 0, "c-1")
    assert Identity.from_json(one.to_json()) == one
    assert one.key == Identity("docker", "consumer", "abc", "2026-12-06T05:00:00Z", 0).key
    assert one.key != Identity("docker", "consumer", "abc", "2026-12-06T05:00:09Z", 0).key
    assert one.key != Identity("docker", "consumer", "abc", "2026-12-06T05:00:00Z", 1).key


def test_a_docker_engine_outside_loopback_is_refused_before_any_call(clean_env, monkeypatch):
    backend = DockerBackend.from_configuration({"docker_host": "tcp://10.9.8.7:2375"})
    with pytest.raises(TargetRefused, match="10.9.8.7 is not loopback"):
        backend.instances("api")
    monkeypatch.setenv("DOCKER_HOST", "tcp://198.51.100.4:2376")
    from chaosmessaging.actions import docker as docker_actions

    with pytest.raises(TargetRefused, match="198.51.100.4 is not loopback"):
        docker_actions.kill_container(name="api")


def test_the_process_backend_partition_names_the_alternative(clean_env):
    with pytest.raises(NotSupported, match="fault proxy"):
        ProcessBackend().partition("api")


def test_process_backend_kill_start_and_the_no_crash_verdict(embedded_stack, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", embedded_stack.home)
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.delenv(runs.ENV, raising=False)
    backend = backend_for("dispatcher")
    assert backend.name == "process"
    runs.new_run(home=embedded_stack.home)
    snapshot_identities(label="contract", services=["dispatcher", "api"])
    runs.record("mark:method", time.time(), home=embedded_stack.home)
    assert no_crash(since="contract")["ok"]
    [before] = backend.instances("dispatcher")
    assert [i.key for i in backend.kill("dispatcher", "SIGKILL")] == [before.key]
    assert not backend.instances("dispatcher")[0].alive
    [after] = backend.start("dispatcher", timeout=60)
    assert after.alive and after.key != before.key and backend.ready("dispatcher")
    verdict = no_crash(since="contract")
    assert not verdict["ok"] and verdict["changed"] == ["dispatcher"]
    assert faults.active(embedded_stack.home) == []


_NEVER_READY = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_waiting_for_readiness_ends_when_the_process_exits_while_it_starts(tmp_path):
    # a kill engine arms its trigger before it starts a service, so its kill can land while the
    # start waits for /readyz: the wait ends then, not at its timeout (60 s of a consumer down)
    port = free_port()
    record = ServiceRecord(
        name="never-ready",
        pid=None,
        host="127.0.0.1",
        port=port,
        address=f"http://127.0.0.1:{port}",
        cmd=[sys.executable, "-c", _NEVER_READY, str(port)],
        log=str(tmp_path / "logs" / "never-ready.log"),
        health="/healthz",
        ready="/readyz",
    )
    spawn(record, tmp_path)
    try:
        wait_healthy(record, timeout=30)
        with pytest.raises(ServerError, match=r"never-ready not ready within 1s: 503"):
            wait_ready(record, timeout=1)  # alive and not ready: the timeout, as before
        killer = threading.Timer(1.0, os.kill, (record.pid, signal.SIGKILL))
        killer.start()
        began = time.monotonic()
        with pytest.raises(ServerError, match=r"never-ready exited while starting"):
            wait_ready(record, timeout=60)
        assert time.monotonic() - began < 10
    finally:
        if record.alive():
            os.kill(record.pid, signal.SIGKILL)

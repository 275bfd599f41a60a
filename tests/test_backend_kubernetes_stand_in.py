"""The `kubernetes` target backend against a stand-in API server (no cluster can run here).

The stand-in (tests/support/k8s_stand_in.py) serves the endpoints the official client calls and
backs every pod with a real process: deleting a pod really kills its process and a replacement
with a new UID becomes Ready only once its own process answers; `exec kill -s SIG 1` really
signals the pod's process, which the stand-in's kubelet restarts in place (restartCount + 1).
"""

from __future__ import annotations

import secrets as _secrets
import sys
from pathlib import Path

import pytest

from chaosmessaging import runs
from chaosmessaging.actions.process import kill_service, start_service
from chaosmessaging.backends import BackendError, NotSupported, backend_for, backend_name
from chaosmessaging.backends.kubernetes import KubernetesBackend
from chaosmessaging.probes.process import no_crash, snapshot_identities
from chaosmessaging.targets import TargetRefused

sys.path.insert(0, str(Path(__file__).parent / "support"))
from k8s_stand_in import StandInCluster  # noqa: E402

LABELS = {"app.kubernetes.io/name": "api", "app.kubernetes.io/part-of": "chat"}


@pytest.fixture
def cluster():
    token = _secrets.token_urlsafe(16)
    with StandInCluster("chat", {"api": (LABELS, 2)}, token) as stand_in:
        stand_in.wait_ready()
        yield stand_in


def _settings(cluster, tmp_path, **extra) -> tuple[dict, dict]:
    configuration = {
        "chaosmessaging_home": str(tmp_path),
        "target_backend": "kubernetes",
        "k8s_api_url": cluster.url,
        "k8s_namespace": "chat",
        "k8s_label_selector": "app.kubernetes.io/name={service},app.kubernetes.io/part-of=chat",
        **extra,
    }
    return configuration, {"kubernetes": {"k8s_token": cluster.token}}


def test_stand_in_delete_pod_replacement_becomes_ready_with_a_new_identity(cluster, tmp_path):
    configuration, secrets = _settings(cluster, tmp_path)
    assert backend_name("api", configuration, secrets) == "kubernetes"
    backend = backend_for("api", configuration, secrets)
    assert isinstance(backend, KubernetesBackend)
    before = backend.instances("api")
    assert len(before) == 2 and all(i.alive for i in before)
    assert backend.ready("api")

    victim, bystander = before
    killed = backend.kill("api", "SIGKILL", instance=victim.instance)
    assert [i.key for i in killed] == [victim.key]
    assert any(c == f"delete {victim.name}" for c in cluster.calls)
    assert victim.instance not in {i.instance for i in backend.instances("api")}

    after = backend.start("api", timeout=30)
    assert len(after) == 2 and backend.ready("api")
    keys = {i.key for i in after}
    assert bystander.key in keys  # the other replica never restarted
    assert victim.key not in keys
    (replacement,) = [i for i in after if i.instance != bystander.instance]
    assert replacement.instance != victim.instance and replacement.name != victim.name
    assert replacement.restarts == 0 and replacement.alive


def test_stand_in_exec_kill_restarts_the_process_in_place(cluster, tmp_path):
    configuration, secrets = _settings(cluster, tmp_path, k8s_kill_mode="exec")
    backend = backend_for("api", configuration, secrets)
    victim = backend.instances("api")[0]
    backend.kill("api", "SIGKILL", instance=victim.name)
    assert f"exec {victim.name} kill -s KILL 1" in cluster.calls
    after = {i.instance: i for i in backend.start("api", timeout=30)}
    assert victim.instance in after  # same pod UID ...
    assert after[victim.instance].restarts == victim.restarts + 1  # ... its container restarted
    assert after[victim.instance].key != victim.key


def test_stand_in_kill_service_action_reaches_pods_through_the_backend(cluster, tmp_path):
    configuration, secrets = _settings(cluster, tmp_path)
    before = backend_for("api", configuration, secrets).instances("api")
    result = kill_service(name="api", configuration=configuration, secrets=secrets)
    assert result["backend"] == "kubernetes"
    assert sorted(result["killed"]) == sorted(i.instance for i in before)
    start_service(name="api", timeout=30, configuration=configuration, secrets=secrets)
    now = backend_for("api", configuration, secrets).instances("api")
    assert len(now) == 2 and not {i.instance for i in now} & {i.instance for i in before}


def test_stand_in_no_crash_verdict_holds_then_sees_the_in_place_restart(cluster, tmp_path):
    configuration, secrets = _settings(cluster, tmp_path, k8s_kill_mode="exec")
    runs.new_run(str(tmp_path))
    snapshot_identities("pods", ["api"], configuration, secrets)
    runs.record("mark:method", 1.0, home=str(tmp_path))
    held = no_crash("pods", configuration, secrets)
    assert held["ok"], held["reason"]
    kill_service(name="api", configuration=configuration, secrets=secrets)
    start_service(name="api", timeout=30, configuration=configuration, secrets=secrets)
    breached = no_crash("pods", configuration, secrets)
    assert not breached["ok"] and breached["changed"] == ["api"]


def test_stand_in_refuses_a_wrong_token_with_an_actionable_error(cluster, tmp_path):
    configuration, _ = _settings(cluster, tmp_path)
    backend = backend_for("api", configuration, {"k8s_token": "not-the-token"})
    with pytest.raises(BackendError, match="refused to list pods .* 401"):
        backend.instances("api")
    with pytest.raises(NotSupported, match="NetworkPolicy"):
        backend.partition("api")


def test_api_server_outside_the_allow_list_is_refused_before_any_call(tmp_path):
    configuration = {
        "chaosmessaging_home": str(tmp_path),
        "target_backend": "kubernetes",
        "k8s_api_url": "https://k8s.prod.example:6443",
    }
    with pytest.raises(TargetRefused, match="Kubernetes API server"):
        backend_for("api", configuration, {"k8s_token": "t"})
    allowed = {**configuration, "allow_hosts": ["k8s.prod.example"]}
    backend = backend_for("api", allowed, {"k8s_token": "t"})
    assert backend.describe()["api_url"] == "https://k8s.prod.example:6443"
    assert "t" not in backend.describe().values()  # the token stays out of fault records

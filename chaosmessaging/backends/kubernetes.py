"""The `kubernetes` target backend: services as pods, through the official `kubernetes` client.

Service S is the pods of ``k8s_namespace`` (default ``default``) matching ``k8s_label_selector``, a
template where ``{service}`` stands for S (default ``app.kubernetes.io/name={service}``), like
chaostoolkit-kubernetes selects its targets. Identity = pod UID + the container's
``restartCount`` (and its ``startedAt``): a pod replaced by its controller has a new UID, a
container restarted in place a higher restart count.

Faults:

- `kill` with ``k8s_kill_mode: delete`` (default) deletes the pods (grace period 0 for SIGKILL,
  the pod's own for SIGTERM) and returns once they are gone; with ``k8s_kill_mode: exec`` it runs
  ``kill -s SIG 1`` in the container (the process in place; the kubelet restarts it) and returns
  once the restart count grew. The image must have a `kill` command for ``exec``.
- `stop` deletes the pods gracefully; `start` waits until the controller's replacements (as many
  pods as the selector had before the fault) are Ready; `restart` is both.
- `pause` / `unpause` send SIGSTOP / SIGCONT to process 1 in the container (exec).
- `partition`: not here (`NotSupported`): use a NetworkPolicy or the fault proxy.

Where the API server is: ``k8s_api_url`` (``CHAOSMESSAGING_K8S_API_URL``) with a bearer token
``k8s_token`` (a secret, or ``CHAOSMESSAGING_K8S_TOKEN``), else the in-cluster service account
(a Job running an experiment, see deploy/), else the kubeconfig (``k8s_kubeconfig`` or
``KUBECONFIG``, context ``k8s_context``). Its host passes the target allow-list before any call.
The token is never written to a fault record or a log: `describe()` leaves it out and a reverter
reads it again from the same place.
"""

from __future__ import annotations

import os
import time
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmessaging import targets
from chaosmessaging.backends import (
    TERMINATING,
    BackendError,
    Identity,
    NotSupported,
    TargetNotFound,
    setting,
    signal_name,
)
from chaosmessaging.config import redact
from chaosmessaging.util import poll

try:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.stream import stream
except ModuleNotFoundError as exc:  # the `kubernetes` extra is not installed
    raise ModuleNotFoundError(
        f"{exc.name} is missing: pip install 'chaosmessaging[kubernetes]'", name=exc.name
    ) from None

__all__ = ["DEFAULT_SELECTOR", "KILL_MODES", "KubernetesBackend"]

DEFAULT_SELECTOR = "app.kubernetes.io/name={service}"
KILL_MODES = ("delete", "exec")


def _api_configuration(
    api_url: str | None,
    token: str | None,
    kubeconfig: str | None,
    context: str | None,
    verify_ssl: bool,
) -> k8s.Configuration:
    cfg = k8s.Configuration()
    if api_url:
        cfg.host = api_url.rstrip("/")
        cfg.verify_ssl = verify_ssl
        if token:
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
        return cfg
    except ConfigException:
        pass
    try:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=cfg
        )
    except (ConfigException, OSError) as exc:
        raise BackendError(
            f"no Kubernetes API server configured ({exc}): set k8s_api_url (and the secret "
            "k8s_token), run inside a pod with a service account, or point k8s_kubeconfig / "
            "KUBECONFIG at a kubeconfig"
        ) from None
    return cfg


class KubernetesBackend:
    """Pods of one namespace, matched to services by a label selector template."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str = "default",
        selector: str = DEFAULT_SELECTOR,
        api_url: str | None = None,
        token: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        container: str | None = None,
        kill_mode: str = "delete",
        verify_ssl: bool = True,
        configuration: Configuration = None,
        secrets: Secrets = None,
    ) -> None:
        if kill_mode not in KILL_MODES:
            raise BackendError(f"k8s_kill_mode {kill_mode!r} must be one of {list(KILL_MODES)}")
        self.namespace, self.selector = namespace or "default", selector or DEFAULT_SELECTOR
        self.container, self.kill_mode = container, kill_mode
        self.kubeconfig, self.context, self.verify_ssl = kubeconfig, context, verify_ssl
        self._configuration, self._secrets = configuration, secrets
        self._cfg = _api_configuration(api_url, token, kubeconfig, context, verify_ssl)
        # before any call: the API server must be loopback or allowed, like every target
        targets.check(self._cfg.host, "Kubernetes API server", configuration, secrets)
        self.api_url = self._cfg.host
        self.core = k8s.CoreV1Api(k8s.ApiClient(self._cfg))
        #: service -> how many pods it had before a fault (what `start` waits for)
        self.expected: dict[str, int] = {}

    @classmethod
    def from_configuration(
        cls,
        configuration: Configuration = None,
        secrets: Secrets = None,
        service: str | None = None,
    ) -> KubernetesBackend:
        def get(key: str, env: str | None = None) -> Any:
            return setting(key, env, configuration, secrets)

        verify = str(get("k8s_verify_ssl", "CHAOSMESSAGING_K8S_VERIFY_SSL") or "true")
        return cls(
            namespace=get("k8s_namespace", "CHAOSMESSAGING_K8S_NAMESPACE") or "default",
            selector=get("k8s_label_selector", "CHAOSMESSAGING_K8S_LABEL_SELECTOR")
            or DEFAULT_SELECTOR,
            api_url=get("k8s_api_url", "CHAOSMESSAGING_K8S_API_URL"),
            token=get("k8s_token", "CHAOSMESSAGING_K8S_TOKEN"),
            kubeconfig=get("k8s_kubeconfig", "KUBECONFIG"),
            context=get("k8s_context", "CHAOSMESSAGING_K8S_CONTEXT"),
            container=get("k8s_container", "CHAOSMESSAGING_K8S_CONTAINER"),
            kill_mode=str(get("k8s_kill_mode", "CHAOSMESSAGING_K8S_KILL_MODE") or "delete"),
            verify_ssl=verify.strip().lower() not in ("false", "0", "no"),
            configuration=configuration,
            secrets=secrets,
        )

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> KubernetesBackend:
        # the token is not in the description: read again from the environment
        return cls(
            namespace=description.get("namespace") or "default",
            selector=description.get("selector") or DEFAULT_SELECTOR,
            api_url=description.get("api_url"),
            token=os.environ.get("CHAOSMESSAGING_K8S_TOKEN"),
            kubeconfig=description.get("kubeconfig"),
            context=description.get("context"),
            container=description.get("container"),
            kill_mode=description.get("kill_mode") or "delete",
            verify_ssl=description.get("verify_ssl", True),
            configuration={"allow_hosts": description.get("allow_hosts") or []},
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "selector": self.selector,
            "api_url": self.api_url,
            "kubeconfig": self.kubeconfig,
            "context": self.context,
            "container": self.container,
            "kill_mode": self.kill_mode,
            "verify_ssl": self.verify_ssl,
            "allow_hosts": targets.allowed_hosts(self._configuration, self._secrets),
        }

    # -- reading -------------------------------------------------------------------------

    def label_selector(self, service: str) -> str:
        return self.selector.replace("{service}", service)

    def _refused(self, what: str, exc: Exception) -> BackendError:
        if isinstance(exc, ApiException):
            hint = (
                " (the service account needs deploy/rbac.yaml's Role)" if exc.status == 403 else ""
            )
            return BackendError(
                f"the Kubernetes API at {redact(self.api_url)} refused to {what}: "
                f"{exc.status} {exc.reason}{hint}"
            )
        return BackendError(
            f"cannot reach the Kubernetes API at {redact(self.api_url)} to {what}: {exc}"
        )

    def _call(self, what: str, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # ApiException, and urllib3's connection errors
            raise self._refused(what, exc) from None

    def pods(self, service: str, terminating: bool = False) -> list:
        """The pods of `service` (by default without those being deleted), oldest name first."""
        found = self._call(
            f"list pods {self.label_selector(service)!r} in {self.namespace}",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=self.label_selector(service),
        ).items
        if not terminating:
            found = [p for p in found if p.metadata.deletion_timestamp is None]
        return sorted(found, key=lambda p: p.metadata.name)

    def _status(self, pod) -> Any:
        statuses = pod.status.container_statuses or []
        if self.container:
            statuses = [s for s in statuses if s.name == self.container]
        return statuses[0] if statuses else None

    def identity(self, service: str, pod) -> Identity:
        status = self._status(pod)
        running = status.state.running if status is not None and status.state else None
        started = running.started_at if running is not None else None
        return Identity(
            backend="kubernetes",
            service=service,
            instance=pod.metadata.uid,
            started_at=started.isoformat() if started is not None else None,
            restarts=int(status.restart_count or 0) if status is not None else 0,
            name=pod.metadata.name,
            alive=running is not None and pod.metadata.deletion_timestamp is None,
        )

    def instances(self, service: str) -> list[Identity]:
        return [self.identity(service, p) for p in self.pods(service)]

    def _some(self, service: str, instance: str | None = None) -> list:
        found = self.pods(service)
        if not found:
            raise TargetNotFound(
                f"no pod labelled {self.label_selector(service)} in namespace {self.namespace} "
                f"at {redact(self.api_url)}; set k8s_namespace / k8s_label_selector"
            )
        if instance is not None:
            found = [p for p in found if instance in (p.metadata.uid, p.metadata.name)]
            if not found:
                raise TargetNotFound(f"no pod {instance!r} among {service}'s pods")
        return found

    @staticmethod
    def _ready_pod(pod) -> bool:
        if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
            return False
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    def ready(self, service: str) -> bool:
        found = self.pods(service)
        want = self.expected.get(service, 1)
        return len(found) >= want and all(self._ready_pod(p) for p in found)

    # -- faults --------------------------------------------------------------------------

    def _exec_kill(self, pod, signame: str) -> None:
        container = self.container or pod.spec.containers[0].name
        command = ["kill", "-s", signame.removeprefix("SIG"), "1"]
        what = f"exec {' '.join(command)} in {pod.metadata.name}/{container}"
        try:
            resp = stream(
                self.core.connect_get_namespaced_pod_exec,
                pod.metadata.name,
                self.namespace,
                command=command,
                container=container,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
            )
            resp.run_forever(timeout=10)
            code = resp.returncode
            resp.close()
        except ApiException as exc:
            raise BackendError(
                f"the Kubernetes API at {redact(self.api_url)} refused to {what}: "
                f"{exc.status} {exc.reason} (the Role needs pods/exec create)"
            ) from None
        except Exception as exc:
            raise BackendError(f"could not {what}: {exc}") from None
        if code not in (0, None):
            raise BackendError(f"{what} exited {code}: does the image have a `kill` command?")

    def _delete(self, pod, grace: int | None) -> None:
        body = k8s.V1DeleteOptions(grace_period_seconds=grace)
        try:
            self.core.delete_namespaced_pod(pod.metadata.name, self.namespace, body=body)
        except ApiException as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise self._refused(f"delete pod {pod.metadata.name}", exc) from None
        except Exception as exc:
            raise self._refused(f"delete pod {pod.metadata.name}", exc) from None

    def _wait_gone(self, service: str, before: list[Identity], timeout: float) -> None:
        """Each pod of `before` is deleted (its UID no longer listed), its container no longer
        runs (a pod still terminating after its process exited), or its container restarted."""

        def running(pod) -> bool:
            status = self._status(pod)
            return bool(status is not None and status.state and status.state.running)

        def gone() -> bool:
            now = {p.metadata.uid: p for p in self.pods(service, terminating=True)}
            return all(
                b.instance not in now
                or not running(now[b.instance])
                or self.identity(service, now[b.instance]).restarts > b.restarts
                for b in before
            )

        if not poll(gone, timeout, 0.1):
            raise BackendError(
                f"pods {[b.name for b in before]} of {service} still run {timeout:g} s after "
                "the fault"
            )

    def kill(
        self,
        service: str,
        signal: str = "SIGKILL",
        instance: str | None = None,
        grace: float = 30.0,
    ) -> list[Identity]:
        signame = signal_name(signal)
        if signame in ("SIGSTOP", "SIGTSTP"):
            return self.pause(service)
        found = self._some(service, instance)
        self.expected[service] = max(self.expected.get(service, 0), len(self.pods(service)))
        before = [self.identity(service, p) for p in found]
        for pod in found:
            if self.kill_mode == "exec" or signame not in TERMINATING:
                self._exec_kill(pod, signame)
            else:
                self._delete(pod, 0 if signame == "SIGKILL" else None)
        if signame in TERMINATING:
            self._wait_gone(service, before, grace)
        return before

    def stop(self, service: str, timeout: float = 10.0) -> list[Identity]:
        found = self._some(service)
        self.expected[service] = max(self.expected.get(service, 0), len(found))
        before = [self.identity(service, p) for p in found]
        for pod in found:
            self._delete(pod, int(timeout))
        self._wait_gone(service, before, timeout + 30.0)
        return before

    def start(self, service: str, timeout: float = 60.0) -> list[Identity]:
        """Kubernetes starts the replacements itself (the pods' controller): wait until as many
        pods as before the fault are Ready."""
        if not poll(lambda: self.ready(service), timeout, 0.2):
            found = self.pods(service)
            raise BackendError(
                f"{service}: {sum(map(self._ready_pod, found))} of "
                f"{self.expected.get(service, 1)} pods Ready within {timeout:g} s "
                f"({', '.join(f'{p.metadata.name}: {p.status.phase}' for p in found) or 'none'});"
                " see `kubectl describe pod`"
            )
        return self.instances(service)

    def restart(
        self, service: str, signal: str = "SIGTERM", timeout: float = 60.0
    ) -> list[Identity]:
        signame = signal_name(signal)
        if signame not in TERMINATING:
            raise BackendError(
                f"{signame} does not end a process; use one of {', '.join(sorted(TERMINATING))}"
            )
        started = time.monotonic()
        self.kill(service, signame, grace=timeout)
        return self.start(service, max(1.0, timeout - (time.monotonic() - started)))

    def pause(self, service: str) -> list[Identity]:
        found = self._some(service)
        for pod in found:
            self._exec_kill(pod, "SIGSTOP")
        return [self.identity(service, p) for p in found]

    def unpause(self, service: str) -> list[Identity]:
        found = self._some(service)
        for pod in found:
            self._exec_kill(pod, "SIGCONT")
        return [self.identity(service, p) for p in found]

    def partition(self, service: str) -> list[Identity]:
        raise NotSupported(
            "the kubernetes backend cannot cut a pod off the network: apply a deny-all "
            "NetworkPolicy to its labels, or put the fault proxy (Toxiproxy) in front of it"
        )

    def reconnect(self, service: str, timeout: float = 60.0) -> list[Identity]:
        raise NotSupported("the kubernetes backend has no partition to undo")

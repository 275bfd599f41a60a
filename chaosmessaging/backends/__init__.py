"""The target model: how a service of the platform is reached for a process-level fault or an
identity verdict, whatever runs it (local processes, Docker containers, Kubernetes pods).

Every process fault (kill, stop, start, restart, pause, the random and catch-up kills) and every
"no crash / same processes / recovered" verdict goes through a `Backend` chosen in configuration,
never through pids or containers directly. A backend is a small class; this module is its
contract, written for whoever adds one (the `kubernetes` backend follows it).

Choosing a backend, for service ``S`` (first match wins):

1. ``target_backends`` (configuration or secrets: ``{"postgres": "process"}``, or env
   ``CHAOSMESSAGING_TARGET_BACKENDS=postgres=process,redis=process``): a per-service override,
   for a mixed deployment (containers for the services, the databases elsewhere);
2. ``target_backend`` (configuration or secrets, or env ``CHAOSMESSAGING_TARGET_BACKEND``):
   ``process`` | ``docker`` | ``kubernetes``;
3. what the running embedded stack recorded for ``S`` in its state file (``stack up --docker``
   records ``docker`` for the services it runs as containers);
4. ``process``.

Each backend reads its own settings with `chaosmessaging.config.lookup` (so configuration, secrets,
environment and the embedded stack's state work the same way for all of them):

- ``process``: ``chaosmessaging_home`` (the embedded stack whose state names the pids);
- ``docker``: ``docker_host`` (``CHAOSMESSAGING_DOCKER_HOST``, then ``DOCKER_HOST``; a
  ``unix://`` socket or a ``tcp://`` address, checked against the target allow-list before any
  call), ``docker_service_label`` (default ``com.docker.compose.service``: the containers of
  service S carry ``<label>=S``; set it to ``name`` to match the container name S, or S-1, S-2 ...)
  and ``docker_project`` (optional ``com.docker.compose.project`` value that narrows the match);
- ``kubernetes``: ``k8s_namespace`` and ``k8s_label_selector`` (a template such as
  ``app.kubernetes.io/name={service}``), the API server address checked against the allow-list.

The contract every backend keeps:

- `Identity` says which incarnation of one instance runs now. Two identities are the same
  incarnation iff their `key` (backend, instance, started_at, restarts) is equal: a process
  restarted in place has a new pid or create time; a container restarted by Docker or by us has
  a new ``State.StartedAt`` and maybe ``RestartCount``; a pod replaced has a new UID, a container
  restarted in its pod a higher ``restartCount``. `instances(S)` returns one identity per
  instance of S, running or not (`alive` says which); an empty list means S is unknown to the
  backend (raise `TargetNotFound` where the caller needs one).
- Nothing is done to an instance the run did not start or was not pointed at: the process
  backend acts only on pids whose create time matches the stack's state; the docker backend only
  on containers matched by the label (and the owner label, when the stack started them); the
  kubernetes backend only on pods of its namespace and selector.
- `kill(S, signal, instance, grace)` sends a signal to every instance of S (or to the one whose
  `Identity.instance` is `instance`) and, for a terminating signal, returns once each is gone
  (a container exited, a pod deleted or its container restarted), waiting up to `grace` s
  (a SIGTERM not obeyed by then is followed by SIGKILL where the platform does that itself).
  It returns the identities it acted on, as they were before. It does not start anything
  again: that is `start`'s job (a supervisor that restarts on its own, Docker's restart policy
  or a ReplicaSet, is fine: the verdicts see the new identity). SIGSTOP is `pause`.
- `stop(S, timeout)` stops gracefully (SIGTERM, SIGKILL after `timeout`); `start(S, timeout)`
  starts what is stopped and **returns only when every instance is ready** (`ready(S)`), or
  raises `BackendError` saying what it waited for; `restart(S, signal, timeout)` = kill with
  `signal` (graceful stop for SIGTERM) then start, ready included. On Kubernetes, "start" is
  waiting for the controller's replacement pods to be ready.
- `pause(S)` / `unpause(S)` freeze and thaw every instance (SIGSTOP/SIGCONT; the cgroup freezer
  for containers).
- `partition(S)` cuts S off the network and `reconnect(S)` undoes it (docker: disconnect from /
  connect to its networks; a backend that cannot raises `NotSupported` with what to use instead,
  e.g. the fault proxy's toxics for the process backend).
- `ready(S)` is true when every instance runs and answers its readiness check (an HTTP URL, the
  container's health status, or the pod's Ready condition).
- Every failure is a `BackendError` (an `ActivityFailed`) with a sentence a user can act on.
- `describe()` returns the backend's settings for a fault record (plain data, no secrets), so a
  fault's reverter can build the same backend again with `backend_from(describe())`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

__all__ = [
    "BACKEND_ENV",
    "BACKENDS",
    "BACKENDS_ENV",
    "Backend",
    "BackendError",
    "Identity",
    "NotSupported",
    "TargetNotFound",
    "backend_for",
    "backend_from",
    "backend_name",
    "identities",
]

BACKEND_ENV = "CHAOSMESSAGING_TARGET_BACKEND"
BACKENDS_ENV = "CHAOSMESSAGING_TARGET_BACKENDS"

#: backend name -> "module:class" (imported on first use: the docker SDK or a Kubernetes client
#: is only needed by a run that uses that backend).
BACKENDS: dict[str, str] = {
    "process": "chaosmessaging.backends.process:ProcessBackend",
    "docker": "chaosmessaging.backends.docker:DockerBackend",
    "kubernetes": "chaosmessaging.backends.kubernetes:KubernetesBackend",
}


class BackendError(ActivityFailed):
    """A backend could not do what was asked; the message says why and what to do."""


class TargetNotFound(BackendError):
    """No instance of the service is known to the backend."""


class NotSupported(BackendError):
    """This backend cannot inject this fault; the message names an alternative."""


@dataclass(frozen=True)
class Identity:
    """One incarnation of one instance of a service.

    `instance`: pid (process), container id (docker), pod UID (kubernetes), as a string.
    `started_at`: process create time (epoch s), container ``State.StartedAt`` (RFC 3339
    string), pod container's start time. `restarts`: 0 for a process, ``RestartCount`` of a
    container, ``restartCount`` of the pod's container. `name`: what a person recognises (the
    container or pod name, or ``service (pid N)``). `alive`: running now."""

    backend: str
    service: str
    instance: str
    started_at: float | str | None
    restarts: int = 0
    name: str = ""
    alive: bool = True

    @property
    def key(self) -> tuple:
        """Equal keys = the same incarnation (nothing crashed or restarted in between)."""
        return (self.backend, self.instance, self.started_at, int(self.restarts or 0))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Identity:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


@runtime_checkable
class Backend(Protocol):
    """What every backend offers; see the module docstring for the contract."""

    name: str

    @classmethod
    def from_configuration(
        cls,
        configuration: Configuration = None,
        secrets: Secrets = None,
        service: str | None = None,
    ) -> Backend:
        """Build from the run's settings (those that concern `service`, where they differ)."""
        ...

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> Backend:
        """Build again from `describe()`'s output (in a fault reverter, maybe another process)."""
        ...

    def instances(self, service: str) -> list[Identity]: ...

    def kill(
        self,
        service: str,
        signal: str = "SIGKILL",
        instance: str | None = None,
        grace: float = 10.0,
    ) -> list[Identity]: ...

    def stop(self, service: str, timeout: float = 10.0) -> list[Identity]: ...

    def start(self, service: str, timeout: float = 60.0) -> list[Identity]: ...

    def restart(
        self, service: str, signal: str = "SIGTERM", timeout: float = 60.0
    ) -> list[Identity]: ...

    def pause(self, service: str) -> list[Identity]: ...

    def unpause(self, service: str) -> list[Identity]: ...

    def partition(self, service: str) -> list[Identity]: ...

    def reconnect(self, service: str, timeout: float = 60.0) -> list[Identity]: ...

    def ready(self, service: str) -> bool: ...

    def describe(self) -> dict[str, Any]: ...


def _setting(key: str, configuration: Configuration, secrets: Secrets) -> Any:
    for scope in (
        configuration or {},
        *(v for v in (secrets or {}).values() if isinstance(v, dict)),
    ):
        if scope.get(key) not in (None, ""):
            return scope[key]
    return (secrets or {}).get(key)


def setting(key: str, env: str | None, configuration: Configuration, secrets: Secrets) -> Any:
    """A backend's setting `key`: configuration or secrets, else the environment variable
    `env` (None when neither gives it)."""
    value = _setting(key, configuration, secrets)
    if value not in (None, ""):
        return value
    return os.environ.get(env) or None if env else None


#: signals that end a process (what `kill` accepts; the others pause or are ignored)
TERMINATING = {"SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT", "SIGABRT"}


def signal_name(sig: str | int) -> str:
    """``"SIGKILL"`` for 9, "kill", "SIGKILL"...; `BackendError` for an unknown signal."""
    import signal as _signal

    from chaosmessaging.stack.control import signal_number

    try:
        return _signal.Signals(signal_number(sig)).name
    except ValueError as exc:
        raise BackendError(f"{exc}; or give a number") from None


def _overrides(configuration: Configuration, secrets: Secrets) -> dict[str, str]:
    raw = _setting("target_backends", configuration, secrets) or os.environ.get(BACKENDS_ENV, "")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    pairs = [p.split("=", 1) for p in str(raw).split(",") if "=" in p]
    return {k.strip(): v.strip() for k, v in pairs}


def _from_stack(service: str, configuration: Configuration) -> str | None:
    from chaosmessaging.stack.state import StackNotRunning, StackStateError, load_state
    from chaosmessaging.util import home_of

    try:
        record = load_state(home_of(configuration)).services.get(service)
    except (StackNotRunning, StackStateError):
        return None
    return getattr(record, "backend", None) if record is not None else None


def backend_name(service: str, configuration: Configuration = None, secrets: Secrets = None) -> str:
    """Which backend reaches `service` (see the module docstring for the order)."""
    name = (
        _overrides(configuration, secrets).get(service)
        or _setting("target_backend", configuration, secrets)
        or os.environ.get(BACKEND_ENV)
        or _from_stack(service, configuration)
        or "process"
    )
    name = str(name).strip().lower()
    if name not in BACKENDS:
        raise BackendError(
            f"unknown target backend {name!r} for service {service!r}: use one of "
            f"{', '.join(BACKENDS)} (target_backend / {BACKEND_ENV})"
        )
    return name


def _load(name: str) -> type:
    module_name, _, cls = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BackendError(
            f"the {name} target backend is not available ({exc}); install its extra or choose "
            f"another target_backend"
        ) from None
    return getattr(module, cls)


def backend_for(
    service: str, configuration: Configuration = None, secrets: Secrets = None
) -> Backend:
    """The backend that reaches `service`, built from configuration/secrets/environment."""
    name = backend_name(service, configuration, secrets)
    return _load(name).from_configuration(configuration, secrets, service=service)


def backend_from(description: dict[str, Any]) -> Backend:
    """Rebuild a backend from `Backend.describe()` (a fault recipe's ``backend`` field)."""
    name = description.get("name", "process")
    if name not in BACKENDS:
        raise BackendError(f"unknown target backend {name!r} in a fault record")
    return _load(name).from_description(description)


def identities(
    services: list[str], configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, list[Identity]]:
    """{service: its instances' identities}, each service through its own backend."""
    return {s: backend_for(s, configuration, secrets).instances(s) for s in services}

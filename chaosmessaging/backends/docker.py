"""The `docker` target backend: services as containers on a Docker Engine (Docker SDK).

Identity = container id + ``State.StartedAt`` + ``RestartCount``: a container killed and started
again keeps its id but not its start time, so the "no crash" verdict sees it.

Which containers are service S: those carrying ``<docker_service_label>=S`` (default label
``com.docker.compose.service``, what Compose sets; `chaosmessaging stack up --docker` sets it too),
narrowed to ``com.docker.compose.project=<docker_project>`` when a project is set. With
``docker_service_label: name`` the container named S (or S-1, S-2, ...) is S.

Readiness (`start`, `restart`, `ready`): the container runs and, when it carries the label
``io.chaosmessaging.ready-url`` (the stack's containers do), that URL answers 200; else, when the
image defines a HEALTHCHECK, Docker reports it healthy; else running is ready. A container that
exits while it starts (killed by a kill trigger, or crashed) with no restart policy to bring it
back fails the wait at once, with its exit code and last log lines, instead of at the timeout.

The engine's address (``docker_host``: a ``unix://`` socket or ``tcp://host:port``) and every
readiness URL pass the target allow-list (`chaosmessaging.targets`) before any call.
"""

from __future__ import annotations

import os
import re
from typing import Any

import docker
import httpx
from chaoslib.types import Configuration, Secrets
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container

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
from chaosmessaging.stack.engine import (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    READY_URL_LABEL,
    EngineError,
    engine_address,
    engine_client,
)
from chaosmessaging.util import http, poll

__all__ = [
    "DockerBackend",
    "container_ready",
    "docker_client",
    "wait_ready",
]


def docker_address(
    host: str | None, configuration: Configuration = None, secrets: Secrets = None
) -> str:
    """The Docker engine's address (`host`, else DOCKER_HOST, else the default socket), once
    the target allow-list accepts it (refused as ``docker_host``)."""
    return targets.check(engine_address(host), "docker_host", configuration, secrets)


def docker_client(
    host: str | None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    timeout: float = 30,
) -> docker.DockerClient:
    """A Docker SDK client for `host` (None: the environment's DOCKER_HOST or the default
    socket), after checking the host against the target allow-list."""
    address = docker_address(host, configuration, secrets)
    try:
        return engine_client(address, timeout)
    except EngineError as exc:
        raise BackendError(redact(str(exc))) from None


def _setting(
    key: str, env: str | None, configuration: Configuration, secrets: Secrets, service: str | None
) -> Any:
    value = setting(key, env, configuration, secrets)
    if value is not None:
        return value
    if service is None:
        return None
    from chaosmessaging.stack.state import StackNotRunning, StackStateError, load_state
    from chaosmessaging.util import home_of

    try:
        record = load_state(home_of(configuration)).services.get(service)
    except (StackNotRunning, StackStateError):
        return None
    return (getattr(record, "docker", None) or {}).get(key) if record else None


def container_ready(
    container: Container, configuration: Configuration = None, secrets: Secrets = None
) -> bool:
    """The container runs (not paused) and answers its readiness check: the URL of its
    `READY_URL_LABEL` label (allow-list checked) answers 200, else Docker's health status is
    healthy, else (no check defined) running is ready."""
    try:
        container.reload()
    except NotFound:
        return False
    state = container.attrs.get("State", {})
    if not state.get("Running") or state.get("Paused"):
        return False
    url = (container.labels or {}).get(READY_URL_LABEL)
    if url:
        targets.check(url, "readiness URL", configuration, secrets)
        try:
            return http().get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False
    health = (state.get("Health") or {}).get("Status")
    return health in (None, "healthy")


def _exited_for_good(container: Container) -> bool:
    """The container stopped (killed, crashed) and Docker will not start it again by itself (no
    restart policy): waiting for it to become ready is pointless."""
    state = container.attrs.get("State", {})
    policy = (container.attrs.get("HostConfig", {}).get("RestartPolicy") or {}).get("Name")
    return (
        state.get("Status") in ("exited", "dead")
        and not state.get("Restarting")
        and policy in (None, "", "no")
    )


def wait_ready(
    containers: list[Container],
    timeout: float,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> str | None:
    """Wait until every container of `containers` is ready (`container_ready`): None then; else
    what went wrong, at once when one exited for good (`_exited_for_good`), else at `timeout`:
    "exited while starting (...)" or "not ready within N s (...)", with each container's state,
    exit code and last log lines."""
    exited: list[Container] = []

    def settled() -> bool:
        ready = [container_ready(c, configuration, secrets) for c in containers]  # each reloaded
        exited[:] = [c for c in containers if _exited_for_good(c)]
        return all(ready) or bool(exited)

    if poll(settled, timeout, 0.2) and not exited:
        return None
    states = []
    for c in containers:
        state = c.attrs.get("State", {})
        logs = ""
        if not state.get("Running"):
            try:
                logs = c.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
            except DockerException:
                pass
        code = f" (exit code {state.get('ExitCode')})" if c in exited else ""
        states.append(f"{c.name}: {state.get('Status')}{code} {logs}".strip())
    what = "exited while starting" if exited else f"not ready within {timeout:g} s"
    return f"{what} ({'; '.join(states)})"


class DockerBackend:
    """Containers of one Docker Engine, matched to services by label (or by name)."""

    name = "docker"

    def __init__(
        self,
        host: str | None = None,
        service_label: str = COMPOSE_SERVICE_LABEL,
        project: str | None = None,
        configuration: Configuration = None,
        secrets: Secrets = None,
    ) -> None:
        self.host = host
        self.service_label = service_label or COMPOSE_SERVICE_LABEL
        self.project = project
        self._configuration, self._secrets = configuration, secrets
        self._client: docker.DockerClient | None = None
        #: container id -> networks `partition` disconnected it from (for `reconnect`)
        self.cut: dict[str, list[str]] = {}

    @classmethod
    def from_configuration(
        cls,
        configuration: Configuration = None,
        secrets: Secrets = None,
        service: str | None = None,
    ) -> DockerBackend:
        def get(key: str, env: str | None) -> Any:
            return _setting(key, env, configuration, secrets, service)

        return cls(
            host=get("docker_host", "CHAOSMESSAGING_DOCKER_HOST") or os.environ.get("DOCKER_HOST"),
            service_label=get("docker_service_label", "CHAOSMESSAGING_DOCKER_SERVICE_LABEL"),
            project=get("docker_project", "CHAOSMESSAGING_DOCKER_PROJECT"),
            configuration=configuration,
            secrets=secrets,
        )

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> DockerBackend:
        return cls(
            host=description.get("host"),
            service_label=description.get("service_label") or COMPOSE_SERVICE_LABEL,
            project=description.get("project"),
            configuration={"allow_hosts": description.get("allow_hosts") or []},
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "service_label": self.service_label,
            "project": self.project,
            "allow_hosts": targets.allowed_hosts(self._configuration, self._secrets),
        }

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(self.host, self._configuration, self._secrets)
        return self._client

    # -- reading -------------------------------------------------------------------------

    def containers(self, service: str) -> list[Container]:
        """Every container of `service`, running or not, oldest name first."""
        try:
            if self.service_label == "name":
                pattern = re.compile(rf"{re.escape(service)}(-\d+)?")
                found = [
                    c
                    for c in self.client.containers.list(all=True, filters={"name": service})
                    if pattern.fullmatch(c.name)
                ]
            else:
                labels = [f"{self.service_label}={service}"]
                if self.project:
                    labels.append(f"{COMPOSE_PROJECT_LABEL}={self.project}")
                found = self.client.containers.list(all=True, filters={"label": labels})
        except DockerException as exc:
            raise BackendError(
                f"the Docker engine at {redact(self.host or 'default')} refused to list "
                f"containers: {exc}"
            ) from None
        return sorted(found, key=lambda c: c.name)

    @staticmethod
    def identity(service: str, container: Container) -> Identity:
        state = container.attrs.get("State", {})
        return Identity(
            backend="docker",
            service=service,
            instance=container.id,
            started_at=state.get("StartedAt"),
            restarts=int(container.attrs.get("RestartCount") or 0),
            name=container.name,
            alive=bool(state.get("Running")),
        )

    def instances(self, service: str) -> list[Identity]:
        return [self.identity(service, c) for c in self.containers(service)]

    def _some(self, service: str, instance: str | None = None) -> list[Container]:
        found = self.containers(service)
        if not found:
            where = (
                f"named {service}"
                if self.service_label == "name"
                else f"labelled {self.service_label}={service}"
                + (f" in project {self.project}" if self.project else "")
            )
            raise TargetNotFound(
                f"no container {where} on the Docker engine at {redact(self.host or 'default')}; "
                f"if {service} runs elsewhere, say so per service (target_backends, e.g. "
                f"CHAOSMESSAGING_TARGET_BACKENDS={service}=process)"
            )
        if instance is not None:
            found = [c for c in found if c.id.startswith(str(instance)) or c.name == instance]
            if not found:
                raise TargetNotFound(f"no container {instance!r} among {service}'s containers")
        return found

    def _ready_one(self, container: Container) -> bool:
        return container_ready(container, self._configuration, self._secrets)

    def ready(self, service: str) -> bool:
        return all(self._ready_one(c) for c in self._some(service))

    def _wait_ready(self, service: str, containers: list[Container], timeout: float) -> None:
        problem = wait_ready(containers, timeout, self._configuration, self._secrets)
        if problem:
            raise BackendError(f"{service} {problem}; see `docker logs <container>`")

    def _wait_exited(self, containers: list[Container], timeout: float) -> list[str]:
        def exited() -> bool:
            for c in containers:
                try:
                    c.reload()
                except NotFound:
                    continue
                if c.attrs.get("State", {}).get("Running"):
                    return False
            return True

        poll(exited, timeout, 0.05)
        return [c.name for c in containers if c.attrs.get("State", {}).get("Running")]

    # -- faults --------------------------------------------------------------------------

    def kill(
        self,
        service: str,
        signal: str = "SIGKILL",
        instance: str | None = None,
        grace: float = 10.0,
    ) -> list[Identity]:
        signame = signal_name(signal)
        if signame in ("SIGSTOP", "SIGTSTP"):
            return self.pause(service)
        running = [c for c in self._some(service, instance) if c.status in ("running", "paused")]
        if not running:
            raise BackendError(
                f"no container of {service} is running; start it with the start_service action"
            )
        before = [self.identity(service, c) for c in running]
        for c in running:
            try:
                if c.status == "paused" and signame in TERMINATING:
                    c.unpause()
                c.kill(signal=signame)
            except NotFound:
                continue
            except APIError as exc:
                if "is not running" not in str(exc):
                    raise BackendError(f"could not kill container {c.name}: {exc}") from None
        if signame in TERMINATING:
            left = self._wait_exited(running, grace)
            if left:
                raise BackendError(f"containers {left} still run {grace:g} s after {signame}")
        return before

    def stop(self, service: str, timeout: float = 10.0) -> list[Identity]:
        found = self._some(service)
        before = [self.identity(service, c) for c in found]
        for c in found:
            try:
                if c.status == "paused":
                    c.unpause()
                c.stop(timeout=int(timeout))
            except NotFound:
                continue
            except DockerException as exc:
                raise BackendError(f"could not stop container {c.name}: {exc}") from None
        return before

    def start(self, service: str, timeout: float = 60.0) -> list[Identity]:
        found = self._some(service)
        for c in found:
            c.reload()
            try:
                if c.status == "paused":
                    c.unpause()
                elif c.status != "running":
                    c.start()
            except DockerException as exc:
                raise BackendError(f"could not start container {c.name}: {exc}") from None
        self._wait_ready(service, found, timeout)
        return [self.identity(service, c) for c in found]

    def restart(
        self, service: str, signal: str = "SIGTERM", timeout: float = 60.0
    ) -> list[Identity]:
        signame = signal_name(signal)
        if signame not in TERMINATING:
            raise BackendError(
                f"{signame} does not end a process; use one of {', '.join(sorted(TERMINATING))}"
            )
        if signame == "SIGTERM":
            self.stop(service, timeout=min(timeout, 30.0))
        else:
            self.kill(service, signame, grace=timeout)
        return self.start(service, timeout)

    def pause(self, service: str) -> list[Identity]:
        found = [c for c in self._some(service) if c.status == "running"]
        for c in found:
            c.pause()
        return [self.identity(service, c) for c in found]

    def unpause(self, service: str) -> list[Identity]:
        found = self._some(service)
        for c in found:
            c.reload()
            if c.status == "paused":
                c.unpause()
        return [self.identity(service, c) for c in found]

    def partition(self, service: str) -> list[Identity]:
        found = self._some(service)
        for c in found:
            networks = list((c.attrs.get("NetworkSettings") or {}).get("Networks") or {})
            if c.attrs.get("HostConfig", {}).get("NetworkMode") == "host" or "host" in networks:
                raise NotSupported(
                    f"container {c.name} uses the host's network, which Docker cannot disconnect; "
                    "partition it with the fault proxy (chaosmessaging.actions.toxiproxy) or run "
                    "it on a user-defined network"
                )
            for net in networks:
                self.client.networks.get(net).disconnect(c)
            self.cut[c.id] = networks
        return [self.identity(service, c) for c in found]

    def reconnect(
        self, service: str, timeout: float = 60.0, networks: dict[str, list[str]] | None = None
    ) -> list[Identity]:
        cut = networks if networks is not None else self.cut
        found = self._some(service)
        for c in found:
            for net in cut.get(c.id, []):
                try:
                    self.client.networks.get(net).connect(c)
                except APIError as exc:
                    if "already exists" not in str(exc):
                        raise BackendError(
                            f"could not reconnect {c.name} to {net}: {exc}"
                        ) from None
            cut.pop(c.id, None)
        self._wait_ready(service, found, timeout)
        return [self.identity(service, c) for c in found]

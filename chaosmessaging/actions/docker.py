"""Kill, stop, start, restart, pause and unpause Docker containers (for platforms run in Docker).

Containers are named by `name` (exact name or id) or by `label` (``"key=value"``, every matching
container, running or not); a label matching more than `max_containers` containers is refused so
a loose label cannot take down a whole host. The engine is reached through the `docker` SDK with
the usual environment (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``...), or `docker_host` when given.

Pauses are recorded in the fault ledger as ``container_paused`` (reverted by unpausing), kills and
stops as ``container_stopped`` (reverted by starting the container again). Starting and restarting
return once every container is ready (`chaosmessaging.backends.docker.wait_ready`: its
readiness URL label answers 200, else Docker reports it healthy, else it runs), or fail saying so
(at once when a container exits while it starts).

The engine's address passes the target allow-list first (`chaosmessaging.targets`): a
``tcp://`` engine outside loopback is refused unless its host is in ``allow_hosts``.

These actions name containers the way Docker does; to reach a *service* whichever way it runs
(process, container, pod), use `chaosmessaging.actions.process` with the `docker` target backend.
"""

import os
from collections.abc import Callable
from pathlib import Path

import docker
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from docker.errors import DockerException, NotFound
from docker.models.containers import Container
from logzero import logger

from chaosmessaging import faults
from chaosmessaging.backends.docker import docker_address, wait_ready
from chaosmessaging.config import redact
from chaosmessaging.util import home_of

__all__ = [
    "kill_container",
    "stop_container",
    "start_container",
    "restart_container",
    "pause_container",
    "unpause_container",
]


def _host(docker_host: str | None, configuration: Configuration) -> str | None:
    return docker_host or (configuration or {}).get("docker_host") or os.environ.get("DOCKER_HOST")


def _client(
    docker_host: str | None,
    timeout: float = 30,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> docker.DockerClient:
    docker_address(docker_host, configuration, secrets)
    environment = dict(os.environ)
    if docker_host:
        environment["DOCKER_HOST"] = docker_host
    try:
        return docker.from_env(environment=environment, timeout=int(timeout))
    except DockerException as exc:
        shown = redact(docker_host or "unset, i.e. unix:///var/run/docker.sock")
        raise ActivityFailed(
            f"cannot reach the Docker engine (DOCKER_HOST={shown}): {exc}; start "
            "Docker or point DOCKER_HOST (or the docker_host argument) at a "
            "running engine"
        ) from None


def _containers(
    client: docker.DockerClient, name: str | None, label: str | None, max_containers: int
) -> list[Container]:
    if bool(name) == bool(label):
        raise ActivityFailed(
            "name exactly one target: `name` (container name or id) or `label` (key=value)"
        )
    try:
        if name:
            return [client.containers.get(name)]
        found = client.containers.list(all=True, filters={"label": label})
    except NotFound:
        raise ActivityFailed(f"no container named {name!r} on this Docker engine") from None
    except DockerException as exc:
        raise ActivityFailed(f"the Docker engine refused to list containers: {exc}") from None
    if not found:
        raise ActivityFailed(f"no container carries the label {label!r}")
    if len(found) > max_containers:
        names = ", ".join(c.name for c in found[:10])
        raise ActivityFailed(
            f"{len(found)} containers carry {label!r} but max_containers is "
            f"{max_containers} ({names}); narrow the label or raise "
            "max_containers"
        )
    return found


def _apply(
    verb: str,
    op: Callable[[Container], object],
    name: str | None,
    label: str | None,
    max_containers: int,
    docker_host: str | None,
    configuration: Configuration,
    fault_kind: str | None = None,
    clears: str | None = None,
    ready_timeout: float | None = None,
    secrets: Secrets = None,
    **extra,
) -> dict:
    host = _host(docker_host, configuration)
    client = _client(host, configuration=configuration, secrets=secrets)
    home = home_of(configuration)
    done = []
    found = _containers(client, name, label, max_containers)
    for container in found:
        try:
            op(container)
        except DockerException as exc:
            raise ActivityFailed(f"could not {verb} container {container.name}: {exc}") from None
        target = f"container:{container.name}"
        if fault_kind:
            faults.record(
                fault_kind,
                target,
                {"container": container.id, "name": container.name, "docker_host": host},
                home=home,
                details={"action": verb, **extra},
            )
        if clears:
            faults.clear(target, home, kind=clears)
        done.append(container.name)
        logger.info(f"{verb} container {container.name}")
    if ready_timeout is not None:
        _wait_ready(found, float(ready_timeout), configuration, secrets)
    return {"containers": done, "action": verb, **extra}


def _wait_ready(
    found: list[Container], timeout: float, configuration: Configuration, secrets: Secrets
) -> None:
    problem = wait_ready(found, timeout, configuration, secrets)
    if problem:
        raise ActivityFailed(f"containers were started but {problem}; see `docker logs`")


def kill_container(
    name: str = None,
    label: str = None,
    signal: str = "SIGKILL",
    max_containers: int = 1,
    docker_host: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Send `signal` (default SIGKILL) to the container named `name` or those carrying `label`.

    Recorded as a fault reverted by starting the container. Returns
    ``{"containers": [names], "action": "kill", "signal": ...}``.
    """
    return _apply(
        "kill",
        lambda c: c.kill(signal=signal),
        name,
        label,
        max_containers,
        docker_host,
        configuration,
        fault_kind="container_stopped",
        secrets=secrets,
        signal=signal,
    )


def stop_container(
    name: str = None,
    label: str = None,
    timeout: int = 10,
    max_containers: int = 1,
    docker_host: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop containers gracefully (SIGTERM, then SIGKILL after `timeout` seconds).

    Recorded as a fault reverted by starting the container. Returns
    ``{"containers": [names], "action": "stop"}``.
    """
    return _apply(
        "stop",
        lambda c: c.stop(timeout=timeout),
        name,
        label,
        max_containers,
        docker_host,
        configuration,
        fault_kind="container_stopped",
        secrets=secrets,
    )


def start_container(
    name: str = None,
    label: str = None,
    max_containers: int = 1,
    docker_host: str = None,
    ready_timeout: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start stopped containers, clear their ``container_stopped`` faults and wait up to
    `ready_timeout` s until each is ready.

    Returns ``{"containers": [names], "action": "start"}``.
    """
    return _apply(
        "start",
        lambda c: c.start(),
        name,
        label,
        max_containers,
        docker_host,
        configuration,
        clears="container_stopped",
        ready_timeout=ready_timeout,
        secrets=secrets,
    )


def restart_container(
    name: str = None,
    label: str = None,
    timeout: int = 10,
    max_containers: int = 1,
    docker_host: str = None,
    ready_timeout: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Restart containers (stop with `timeout`, then start), clear their stopped faults and wait
    up to `ready_timeout` s until each is ready.

    Returns ``{"containers": [names], "action": "restart"}``.
    """
    return _apply(
        "restart",
        lambda c: c.restart(timeout=timeout),
        name,
        label,
        max_containers,
        docker_host,
        configuration,
        clears="container_stopped",
        ready_timeout=ready_timeout,
        secrets=secrets,
    )


def pause_container(
    name: str = None,
    label: str = None,
    max_containers: int = 1,
    docker_host: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Freeze every process of the containers (cgroup freezer), as a hung host would look.

    Recorded as a fault reverted by unpausing.
    Returns ``{"containers": [names], "action": "pause"}``.
    """
    return _apply(
        "pause",
        lambda c: c.pause(),
        name,
        label,
        max_containers,
        docker_host,
        configuration,
        fault_kind="container_paused",
        secrets=secrets,
    )


def unpause_container(
    name: str = None,
    label: str = None,
    max_containers: int = 1,
    docker_host: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Resume paused containers and clear their ``container_paused`` faults.

    Returns ``{"containers": [names], "action": "unpause"}``.
    """
    return _apply(
        "unpause",
        lambda c: c.unpause(),
        name,
        label,
        max_containers,
        docker_host,
        configuration,
        clears="container_paused",
        secrets=secrets,
    )


# -- reverters (see chaosmessaging.faults) ---------------------------------------------------


def _container_from(recipe: dict) -> Container:
    client = _client(recipe.get("docker_host"))
    try:
        return client.containers.get(recipe.get("container") or recipe["name"])
    except NotFound:
        raise ActivityFailed(f"container {recipe.get('name')} no longer exists") from None


def _revert_paused(recipe: dict, home: Path) -> dict:
    container = _container_from(recipe)
    if container.status == "paused":
        container.unpause()
    return {"unpaused": container.name}


def _revert_stopped(recipe: dict, home: Path) -> dict:
    container = _container_from(recipe)
    if container.status != "running":
        container.start()
    _wait_ready([container], 60.0, {"allow_hosts": recipe.get("allow_hosts") or []}, None)
    return {"started": container.name}

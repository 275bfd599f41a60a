"""The reference services as Docker containers (`chaosmessaging stack up --docker`).

The launcher plans the stack as always (ports, environments, roles); this module runs each
reference service (auth, api, dispatcher, consumer, gateway) as a container of the image
`chaosmessaging.stack.images` builds, instead of a local process:

- host networking: the service listens on the same loopback port it would as a process, and
  reaches PostgreSQL, Redis and the fault proxy (which stay local processes of the embedded stack:
  the launcher initialises, migrates and seeds them with the embedded binaries, and the fault
  proxy sits between them and every container exactly as before) on 127.0.0.1;
- labels: ``com.docker.compose.service=<name>`` and ``com.docker.compose.project=<project>`` (so
  the `docker` target backend finds a service's containers as it would a Compose deployment's),
  ``io.chaosmessaging.owner=<home>`` (only containers carrying this home's mark are ever stopped
  or removed) and ``io.chaosmessaging.ready-url`` (the backend's readiness check);
- the service's log: its home's `logs/<name>.log`, bind-mounted, after the launcher's attempt
  marker, so a failure shows this attempt's lines as for a process.

No restart policy: a container that exits stays down until something starts it (a fault's
rollback, `stack up`), which is what the "no crash" verdict needs to see.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from docker.errors import DockerException, NotFound

from chaosmessaging.backends.docker import (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    OWNER_LABEL,
    READY_URL_LABEL,
    docker_client,
)
from chaosmessaging.stack.servers import ServerError, mark_attempt
from chaosmessaging.stack.state import ATTEMPT_MARK, ServiceRecord
from chaosmessaging.util import http, poll, tail

__all__ = [
    "container_of",
    "project_name",
    "remove",
    "remove_owned",
    "run",
    "running",
    "start",
    "wait_healthy",
]


def project_name(home: str | Path) -> str:
    """The Compose-style project of the stack in `home` (stable for one home)."""
    return "chaosmessaging-" + hashlib.sha256(str(home).encode()).hexdigest()[:8]


def _client(record: ServiceRecord):
    return docker_client((record.docker or {}).get("docker_host"))


def container_of(record: ServiceRecord):
    """The container recorded for `record`, or None when it no longer exists."""
    settings = record.docker or {}
    if not settings.get("container"):
        return None
    try:
        return _client(record).containers.get(settings["container"])
    except NotFound:
        return None


def running(record: ServiceRecord) -> bool:
    try:
        container = container_of(record)
    except DockerException:
        return False
    return container is not None and container.status == "running"


def run(
    record: ServiceRecord, image: str, home: str | Path, docker_host: str | None
) -> ServiceRecord:
    """Create and start `record`'s service as a container; record it (backend, host, project,
    container id) in `record`. A container of the same name left by an earlier start of this
    home is removed first (only when it carries this home's owner label)."""
    client = docker_client(docker_host)
    project = project_name(home)
    name = f"{project}-{record.name}"
    try:
        old = client.containers.get(name)
    except NotFound:
        old = None
    if old is not None:
        if (old.labels or {}).get(OWNER_LABEL) != str(home):
            raise ServerError(
                f"a container named {name} exists but was not started by the stack in {home}; "
                "remove it or use another home"
            )
        old.remove(force=True)
    log = Path(record.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    mark_attempt(log, record.name)
    command = ["sh", "-c", f'exec python3 -m msgstack {record.name} >>"{log}" 2>&1']
    container = client.containers.run(
        image,
        command=command,
        name=name,
        detach=True,
        network_mode="host",
        environment=dict(record.env),
        labels={
            COMPOSE_SERVICE_LABEL: record.name,
            COMPOSE_PROJECT_LABEL: project,
            OWNER_LABEL: str(home),
            READY_URL_LABEL: f"http://{record.host}:{record.port}{record.ready or '/healthz'}",
        },
        volumes={str(log.parent): {"bind": str(log.parent), "mode": "rw"}},
        stop_signal="SIGTERM",
    )
    record.pid, record.create_time = None, None
    record.backend = "docker"
    record.docker = {
        "docker_host": docker_host,
        "docker_project": project,
        "container": container.id,
        "image": image,
    }
    return record


def start(record: ServiceRecord, timeout: float = 60.0) -> ServiceRecord:
    """Start `record`'s container again (it exists, stopped) and wait until it is healthy."""
    container = container_of(record)
    if container is None:
        raise ServerError(f"the container of {record.name} no longer exists: run `stack up` again")
    if container.status == "paused":
        container.unpause()
    elif container.status != "running":
        mark_attempt(Path(record.log), record.name)
        container.start()
    wait_healthy(record, timeout)
    return record


def wait_healthy(record: ServiceRecord, timeout: float = 60.0) -> None:
    """Poll the container's health path until it answers 200; raise ServerError with its log
    tail when the container exits or the time runs out."""
    url = f"http://{record.host}:{record.port}{record.health}"

    def healthy() -> bool:
        try:
            return http().get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    if poll(lambda: (healthy() and running(record)) or not running(record), timeout, 0.1):
        if running(record):
            return
    state = "exited" if not running(record) else f"not healthy within {timeout:.0f}s"
    lines = tail(record.log, after=ATTEMPT_MARK) or "(nothing logged yet)"
    raise ServerError(f"container of {record.name} {state} (log {record.log}):\n  {lines}")


def remove(record: ServiceRecord, timeout: float = 10.0) -> bool:
    """Stop and remove `record`'s container; True when there was one."""
    container = container_of(record)
    if container is None:
        return False
    try:
        container.remove(force=True)
    except NotFound:
        return False
    return True


def remove_owned(home: str | Path, docker_host: str | None) -> list[str]:
    """Remove every container carrying this home's owner label (whatever the state file says:
    an interrupted start may have left one unrecorded). Returns their names."""
    client = docker_client(docker_host)
    found = client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={home}"})
    for container in found:
        try:
            container.remove(force=True)
        except NotFound:
            continue
    return [c.name for c in found]

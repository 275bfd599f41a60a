"""The Docker engine as the embedded launcher and the docker target backend both see it: the
labels our containers carry and a Docker SDK client for an address.

It lives under `stack` so that wiring runs downhill: the launcher starts containers with these
labels, and the docker backend (`chaosmessaging.backends.docker`), which acts on them, imports
them from here. The target allow-list is checked where an address comes from a user: by the
backend (`docker_client`) and by the CLI before `stack up --docker`.
"""

from __future__ import annotations

import os

import docker
from docker.errors import DockerException

__all__ = [
    "COMPOSE_PROJECT_LABEL",
    "COMPOSE_SERVICE_LABEL",
    "DEFAULT_DOCKER_HOST",
    "EngineError",
    "OWNER_LABEL",
    "READY_URL_LABEL",
    "engine_address",
    "engine_client",
]

COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
#: set by `stack up --docker` on every container it starts: the stack home that owns it
OWNER_LABEL = "io.chaosmessaging.owner"
#: a URL answering 200 once the container's service is ready
READY_URL_LABEL = "io.chaosmessaging.ready-url"

#: the engine a client reaches when neither docker_host nor DOCKER_HOST names one
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def engine_address(host: str | None) -> str:
    """The engine's address: `host`, else the environment's DOCKER_HOST, else the default socket."""
    return host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


class EngineError(RuntimeError):
    """The Docker engine cannot be reached."""


def engine_client(address: str, timeout: float = 30) -> docker.DockerClient:
    """A Docker SDK client for the engine at `address` (already accepted by the allow-list)."""
    try:
        return docker.DockerClient(base_url=address, timeout=int(timeout))
    except DockerException as exc:
        raise EngineError(
            f"cannot reach the Docker engine at {address}: {exc}; start Docker or point "
            "docker_host (CHAOSMESSAGING_DOCKER_HOST or DOCKER_HOST) at a running engine"
        ) from None

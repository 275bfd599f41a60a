"""HTTP: a service's base URL from the platform file or configuration, and GET with an
actionable error.

A service the platform file describes (`services.<name>`) is reached at its `url`; the
reference stack's well-known endpoint paths name the endpoint, which the file may place
elsewhere: ``/readyz`` is `readiness.path`, ``/metrics`` is `metrics.path`, ``/healthz`` is
`health`. A service the file does not describe falls back to its configuration key.
"""

from __future__ import annotations

import httpx
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging import targets
from chaosmessaging.config import redact
from chaosmessaging.platform import PlatformError, load_platform
from chaosmessaging.platform.schema import Service
from chaosmessaging.platform.templates import find_one, service_address
from chaosmessaging.util import http

__all__ = ["STACK_HINT", "SERVICE_URL_KEYS", "Readiness", "service_url", "http_get"]

STACK_HINT = "is the stack up? `chaosmessaging stack status`"

# service name (as in the embedded stack) -> configuration key of its HTTP base URL
SERVICE_URL_KEYS = {
    "api": "messaging_api_url",
    "auth": "messaging_auth_url",
    "dispatcher": "messaging_dispatcher_url",
    "consumer": "messaging_consumer_url",
    "gateway": "messaging_gateway_url",
}


def service_url(
    service: str, url: str, path: str, configuration: Configuration = None, secrets: Secrets = None
) -> str:
    """`url` as given, else `<base URL of service><path>` from configuration; either way a
    host outside loopback and `allow_hosts` is refused (`chaosmessaging.targets`)."""
    key = SERVICE_URL_KEYS.get(service)
    if url:
        what = f"URL of {service}"
        return targets.address(key or service, configuration, secrets, value=url, what=what)
    described = _described(service, configuration, secrets)
    if described is not None:
        base = service_address(service, described.url, configuration, secrets)
        return base + _endpoint_path(described, path)
    if key is None:
        raise ActivityFailed(
            f"unknown service '{service}': use one of {sorted(SERVICE_URL_KEYS)} or pass a full url"
        )
    return targets.address(key, configuration, secrets, scheme="http").rstrip("/") + path


def _described(service: str, configuration: Configuration, secrets: Secrets) -> Service | None:
    try:
        return load_platform(configuration=configuration, secrets=secrets).services.get(service)
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None


def _endpoint_path(service: Service, path: str) -> str:
    if path == "/readyz" and service.readiness is not None:
        return service.readiness.path
    if path == "/metrics" and service.metrics is not None:
        return service.metrics.path
    if path == "/healthz" and service.health is not None:
        return service.health
    return path


class Readiness:
    """How to read service `service`'s readiness answers, as its platform file says (reference:
    200 is ready, ``{"checks": {dependency: "ok" | why}}`` says what is degraded)."""

    def __init__(
        self, service: str, configuration: Configuration = None, secrets: Secrets = None
    ) -> None:
        described = _described(service, configuration, secrets)
        spec = described.readiness if described else None
        self.ready_status = list(spec.ready_status) if spec else [200]
        mapping = spec.degraded if spec else None
        self.where, self.ok_value = (
            (mapping.checks, mapping.ok_value) if mapping else ("$.checks", "ok")
        )

    def checks(self, body: object) -> tuple[dict, list[str]]:
        """(every dependency's state, the sorted names of those not in their ok state)."""
        found = find_one(self.where, body) if isinstance(body, dict | list) else None
        checks = found if isinstance(found, dict) else {}
        return checks, self.degraded(checks)

    def degraded(self, checks: dict) -> list[str]:
        """The sorted names of the dependencies in `checks` not in their ok state."""
        return sorted(k for k, v in checks.items() if v != self.ok_value)


def http_get(url: str, timeout: float) -> httpx.Response:
    """GET `url`; an unreachable endpoint raises `ActivityFailed`."""
    try:
        return http().get(url, timeout=timeout)
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        raise ActivityFailed(f"cannot reach {redact(url)}: {reason} — {STACK_HINT}") from None

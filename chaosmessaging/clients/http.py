"""HTTP: a service's base URL from configuration, and GET with an actionable error."""

from __future__ import annotations

import httpx
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging import targets
from chaosmessaging.config import lookup, redact

__all__ = ["STACK_HINT", "SERVICE_URL_KEYS", "service_url", "http_get"]

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
    if url:
        return targets.check(url, f"URL of {service}", configuration, secrets)
    key = SERVICE_URL_KEYS.get(service)
    if key is None:
        raise ActivityFailed(
            f"unknown service '{service}': use one of {sorted(SERVICE_URL_KEYS)} or pass a full url"
        )
    base = str(lookup(key, configuration, secrets))
    if "://" not in base:
        base = f"http://{base}"
    targets.check(base, key, configuration, secrets)
    return base.rstrip("/") + path


def http_get(url: str, timeout: float) -> httpx.Response:
    """GET `url`; an unreachable endpoint raises `ActivityFailed`."""
    try:
        return httpx.get(url, timeout=timeout)
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        raise ActivityFailed(f"cannot reach {redact(url)}: {reason} — {STACK_HINT}") from None

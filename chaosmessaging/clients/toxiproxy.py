"""Toxiproxy: the toxiproxy-python client bound to the configured API (`toxiproxy_url`), and a
proxy looked up by name, each with an actionable error when the API or the proxy is missing.

The same client drives a real Toxiproxy or the embedded stack's compatible proxy.
"""

from __future__ import annotations

from urllib.parse import urlparse

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from toxiproxy import Toxiproxy

from chaosmessaging import targets
from chaosmessaging.config import lookup, redact

__all__ = ["api_url", "server", "proxy"]


def api_url(configuration: Configuration, secrets: Secrets, url: str | None) -> str:
    """The Toxiproxy API address (argument, configuration, env, embedded stack, default),
    refused outside loopback and `allow_hosts`."""
    found = lookup("toxiproxy_url", configuration, secrets, url)
    return targets.check(found, "toxiproxy_url", configuration, secrets)


def server(api_url: str) -> Toxiproxy:
    """A toxiproxy-python client bound to `api_url` (the client keeps host/port class-wide)."""
    parsed = urlparse(api_url if "://" in api_url else f"http://{api_url}")
    if not parsed.hostname:
        raise ActivityFailed(
            f"invalid toxiproxy_url {redact(api_url)!r}: expected http://host:port"
        )
    server = Toxiproxy()
    server.update_api_consumer(parsed.hostname, parsed.port or 8474)
    if not server.running():
        raise ActivityFailed(
            f"cannot reach the Toxiproxy API at {redact(api_url)}: start the "
            "embedded "
            "stack (`chaosmessaging stack up`), run `chaosmessaging proxy serve`, "
            "or point toxiproxy_url at your Toxiproxy"
        )
    return server


def proxy(server: Toxiproxy, name: str, api_url: str):
    try:
        proxy = server.get_proxy(name)
    except Exception as exc:  # requests errors, bad JSON
        raise ActivityFailed(
            f"Toxiproxy at {redact(api_url)} failed to list proxies: {redact(str(exc))}"
        ) from None
    if proxy is None:
        known = ", ".join(sorted(server.proxies())) or "none"
        raise ActivityFailed(f"no proxy named {name!r} on {redact(api_url)} (known: {known})")
    return proxy

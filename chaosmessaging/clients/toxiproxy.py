"""Toxiproxy: the toxiproxy-python client bound to the configured API (`toxiproxy_url`), and a
proxy looked up by name, each with an actionable error when the API or the proxy is missing.

The same client drives a real Toxiproxy or the embedded stack's compatible proxy.
"""

from __future__ import annotations

from urllib.parse import urlparse, urlsplit

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from toxiproxy import Toxiproxy

from chaosmessaging import targets
from chaosmessaging.config import lookup, redact

__all__ = ["api_url", "server", "proxy", "check_fronts"]


def api_url(configuration: Configuration, secrets: Secrets, url: str | None) -> str:
    """The Toxiproxy API address (argument, configuration, env, embedded stack, default),
    refused outside loopback and `allow_hosts`."""
    return targets.address("toxiproxy_url", configuration, secrets, value=url)


#: proxy name -> the configuration key of the dependency it must front
FRONTED = {"redis": "messaging_redis_url", "postgres": "messaging_pg_dsn"}


def _host_port(address: str | None) -> tuple[str, int] | None:
    if not address:
        return None
    text = str(address)
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or not port:
        return None
    host = "127.0.0.1" if parts.hostname in ("localhost", "::1") else parts.hostname
    return host, port


def check_fronts(
    target, name: str, api_url: str, configuration: Configuration, secrets: Secrets
) -> None:
    """Before a network fault: the proxy `name` must really front the configured dependency
    (its listen or upstream address is the configured one), else the fault would land on
    another system (another stack's proxy answering on the default port). Proxies with other
    names are not checked (no dependency to compare with)."""
    key = FRONTED.get(name)
    if key is None:
        return
    configured = lookup(key, configuration, secrets, required=False)
    wanted = _host_port(configured)
    if wanted is None:
        return
    ends = {_host_port(getattr(target, end, None)) for end in ("listen", "upstream")}
    if wanted not in ends:
        raise ActivityFailed(
            f"proxy {name!r} on the Toxiproxy at {redact(api_url)} listens on "
            f"{getattr(target, 'listen', '?')} and forwards to {getattr(target, 'upstream', '?')}, "
            f"but {key} is {redact(str(configured))}: this proxy does not front the configured "
            "dependency, so no fault was injected; point toxiproxy_url at the proxy in front of "
            f"it (or {key} at the proxy's listen address)"
        )


def server(api_url: str) -> Toxiproxy:
    """A toxiproxy-python client bound to `api_url` (the client keeps host/port class-wide)."""
    parsed = urlparse(api_url if "://" in api_url else f"http://{api_url}")
    if not parsed.hostname:
        raise ActivityFailed(
            f"invalid toxiproxy_url {redact(api_url)!r}: expected http://host:port"
        )
    if parsed.path not in ("", "/"):
        raise ActivityFailed(
            f"toxiproxy_url {redact(api_url)!r} has a path ({parsed.path}): the Toxiproxy API "
            "lives at the root, give http://host:port"
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
    _is_toxiproxy(api_url, parsed)
    return server


def _is_toxiproxy(api_url: str, parsed) -> None:
    """Something answers HTTP at `api_url`: make sure it is a Toxiproxy API (GET /proxies gives
    a JSON object), not the platform's API or another web server."""
    import requests

    base = f"{parsed.scheme or 'http'}://{parsed.hostname}:{parsed.port or 8474}"
    try:
        response = requests.get(f"{base}/proxies", timeout=5)
        ok = response.status_code == 200 and isinstance(response.json(), dict)
        detail = f"GET /proxies answered HTTP {response.status_code}"
    except ValueError:
        ok, detail = False, "GET /proxies did not answer JSON"
    except requests.RequestException as exc:
        ok, detail = False, f"GET /proxies failed: {type(exc).__name__}"
    if not ok:
        raise ActivityFailed(
            f"toxiproxy_url {redact(api_url)} answers HTTP but is not a Toxiproxy API "
            f"({detail}); point toxiproxy_url at Toxiproxy's API port (8474 by default), not "
            "at the platform's services"
        )


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

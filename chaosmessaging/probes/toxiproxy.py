"""What the Toxiproxy API says is in force: proxies, their state and active toxics."""

from __future__ import annotations

from chaoslib.types import Configuration, Secrets

from chaosmessaging.clients import toxiproxy as tp

__all__ = ["active_toxics", "proxy_enabled"]


def active_toxics(
    proxy: str = None, url: str = None, configuration: Configuration = None, secrets: Secrets = None
) -> dict:
    """Toxics in force per proxy (all proxies, or only `proxy`):
    `{"redis": [{"name", "type", "stream", "toxicity", "attributes"}], ...}`."""
    api_url = tp.api_url(configuration, secrets, url)
    server = tp.server(api_url)
    names = [proxy] if proxy else sorted(server.proxies())
    out = {}
    for name in names:
        toxics = tp.proxy(server, name, api_url).toxics()
        out[name] = [
            {
                "name": t.name,
                "type": t.type,
                "stream": t.stream,
                "toxicity": t.toxicity,
                "attributes": t.attributes,
            }
            for t in toxics.values()
        ]
    return out


def proxy_enabled(
    proxy: str, url: str = None, configuration: Configuration = None, secrets: Secrets = None
) -> bool:
    """True if the named proxy is enabled (listening and forwarding)."""
    api_url = tp.api_url(configuration, secrets, url)
    return bool(tp.proxy(tp.server(api_url), proxy, api_url).enabled)

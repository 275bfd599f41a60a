"""Proxies and the collection of them: what the HTTP API creates, updates, lists and deletes.

A `Proxy` listens on `listen`, opens a connection to `upstream` for each client, and holds its
toxics in creation order. Behaviour follows Toxiproxy's proxy.go / proxy_collection.go:
- `listen` is rewritten to the address actually bound (`127.0.0.1:0` -> `127.0.0.1:40123`),
  so a disabled proxy comes back on the same port;
- disabling closes the listener and drops every live connection; enabling listens again;
- changing `listen` or `upstream` restarts the proxy;
- `populate` keeps a proxy whose listen and upstream are unchanged (toxics included) and
  replaces the others.
Every method runs on the event loop; a lock serialises changes made by concurrent API requests.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from .errors import (
    PROXY_ALREADY_EXISTS,
    PROXY_NOT_FOUND,
    TOXIC_ALREADY_EXISTS,
    TOXIC_NOT_FOUND,
    ApiError,
    bad_request,
    missing_field,
)
from .link import ClientSide, Link
from .toxics import Toxic, new_toxic, update_toxic

__all__ = ["Proxy", "ProxyCollection", "split_address"]

log = logging.getLogger("chaosmessaging.proxy")

# A proxy created without `listen` gets a free loopback port (Toxiproxy would listen on every
# interface; a fault proxy for tests should not be reachable from the network by default).
DEFAULT_LISTEN = "127.0.0.1:0"


def split_address(address: str, what: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); ApiError 400 if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise bad_request(f"invalid {what} address {address!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Proxy:
    """One named proxy: a listener, its live links, and its toxics."""

    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: list[Toxic] = []
        self.links: set[Link] = set()
        self._server: asyncio.Server | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics],
        }

    def upstream_address(self) -> tuple[str, int]:
        return split_address(self.upstream, "upstream")

    async def start(self) -> None:
        if self.enabled:
            return
        host, port = split_address(self.listen, "listen")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            # One socket, IPv4 first: "localhost:0" must not become two listeners on two ports.
            family, kind, proto, _, sockaddr = min(infos, key=lambda i: i[0] != socket.AF_INET)
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: {exc.strerror or exc}", 500) from exc
        self._server = await loop.create_server(lambda: ClientSide(self), sock=sock, backlog=512)
        bound = sock.getsockname()
        self.listen = _join_address(bound[0], bound[1])
        self.enabled = True
        log.info("proxy %s listening on %s -> %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.links):
            link.close(drop=True)
        log.info("proxy %s stopped", self.name)

    async def update(self, body: dict) -> None:
        listen = body.get("listen", self.listen)
        upstream = body.get("upstream", self.upstream)
        enabled = body.get("enabled", self.enabled)
        if not isinstance(listen, str) or not isinstance(upstream, str):
            raise bad_request("listen and upstream must be strings")
        if not isinstance(enabled, bool):
            raise bad_request("enabled must be true or false")
        split_address(upstream, "upstream")
        if listen != self.listen or upstream != self.upstream:
            split_address(listen, "listen")
            await self.stop()
            self.listen, self.upstream = listen, upstream
        if enabled and not self.enabled:
            await self.start()
        elif not enabled:
            await self.stop()

    # -- toxics ---------------------------------------------------------------------------
    def find_toxic(self, name: str) -> Toxic:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        raise TOXIC_NOT_FOUND

    def add_toxic(self, body: object) -> Toxic:
        toxic = new_toxic(body)
        if any(t.name == toxic.name for t in self.toxics):
            raise TOXIC_ALREADY_EXISTS
        self.toxics.append(toxic)
        self._toxics_changed()
        return toxic

    def update_toxic(self, name: str, body: object) -> Toxic:
        old = self.find_toxic(name)
        new = update_toxic(old, body)
        self.toxics[self.toxics.index(old)] = new
        self._toxics_changed()
        return new

    def remove_toxic(self, name: str) -> None:
        self.toxics.remove(self.find_toxic(name))
        self._toxics_changed()

    def reset_toxics(self) -> None:
        if self.toxics:
            self.toxics.clear()
            self._toxics_changed()

    def _toxics_changed(self) -> None:
        for link in list(self.links):
            link.toxics_changed()


def _proxy_from_body(body: object, where: str = "") -> tuple[Proxy, bool]:
    if not isinstance(body, dict):
        raise bad_request("expected a JSON object")
    name, upstream = body.get("name"), body.get("upstream")
    listen = body.get("listen") or DEFAULT_LISTEN
    enabled = body.get("enabled", True)
    if not name:
        raise missing_field(f"name{where}")
    if not upstream:
        raise missing_field(f"upstream{where}")
    if not isinstance(name, str) or not isinstance(upstream, str) or not isinstance(listen, str):
        raise bad_request(f"name, listen and upstream must be strings{where}")
    if enabled is None:
        enabled = True
    if not isinstance(enabled, bool):
        raise bad_request(f"enabled must be true or false{where}")
    if "/" in name:
        raise bad_request(f"proxy name {name!r} must not contain '/'")
    split_address(upstream, "upstream")
    split_address(listen, "listen")
    return Proxy(name, listen, upstream), enabled


class ProxyCollection:
    """All proxies of one server, by name."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise PROXY_NOT_FOUND from None

    async def create(self, body: object) -> Proxy:
        proxy, enabled = _proxy_from_body(body)
        async with self.lock:
            if proxy.name in self.proxies:
                raise PROXY_ALREADY_EXISTS
            if enabled:
                await proxy.start()
            self.proxies[proxy.name] = proxy
        return proxy

    async def populate(self, body: object) -> list[Proxy]:
        """Create or replace many proxies; the whole request is validated before any change."""
        if not isinstance(body, list):
            raise bad_request("expected a JSON array of proxies")
        wanted = [_proxy_from_body(item, f" at proxy {i + 1}") for i, item in enumerate(body)]
        names = [proxy.name for proxy, _ in wanted]
        if len(set(names)) != len(names):
            raise bad_request("duplicate proxy name in the populate request")
        result = []
        async with self.lock:
            for proxy, enabled in wanted:
                existing = self.proxies.get(proxy.name)
                if existing is not None:
                    if existing.listen == proxy.listen and existing.upstream == proxy.upstream:
                        result.append(existing)
                        continue
                    await existing.stop()
                    del self.proxies[proxy.name]
                if enabled:
                    await proxy.start()
                self.proxies[proxy.name] = proxy
                result.append(proxy)
        return result

    async def update(self, name: str, body: object) -> Proxy:
        if not isinstance(body, dict):
            raise bad_request("expected a JSON object")
        async with self.lock:
            proxy = self.get(name)
            await proxy.update(body)
        return proxy

    async def remove(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            await proxy.stop()
            del self.proxies[name]

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's POST /reset)."""
        async with self.lock:
            for proxy in self.proxies.values():
                await proxy.start()
                proxy.reset_toxics()

    async def close(self) -> None:
        async with self.lock:
            for proxy in self.proxies.values():
                await proxy.stop()
            self.proxies.clear()

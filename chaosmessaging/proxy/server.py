"""Running the fault proxy: the API server and the proxies in one asyncio event loop.

`serve()` is the coroutine `python -m chaosmessaging.proxy` runs; `BackgroundProxyServer` runs
the same thing in a thread of its own, for tests and for programs that want a proxy in-process.
Shutdown (SIGTERM/SIGINT, `stop` event, `BackgroundProxyServer.stop`) stops the API, closes
every listener and drops every proxied connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

import uvicorn

from .api import create_app
from .errors import ApiError
from .proxies import ProxyCollection

__all__ = ["BackgroundProxyServer", "ProxyServerError", "load_config", "serve"]

log = logging.getLogger("chaosmessaging.proxy")


class ProxyServerError(RuntimeError):
    """The fault proxy could not start (API port taken, unreadable config, ...)."""


def load_config(path: str | Path) -> list[dict]:
    """Read a Toxiproxy config file: a JSON array of `{"name", "listen", "upstream"}`."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ProxyServerError(f"cannot read proxy config {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ProxyServerError(f"proxy config {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ProxyServerError(
            f"proxy config {path} must be a JSON array of proxies "
            '(e.g. [{"name": "redis", "listen": "127.0.0.1:26379", '
            '"upstream": "127.0.0.1:6379"}])'
        )
    return data


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ProxyServerError(
            f"the fault proxy API cannot listen on {host}:{port}: "
            f"{exc.strerror or exc}; choose another --port or stop what "
            "holds this one"
        ) from exc
    return sock


async def serve(
    host: str = "127.0.0.1",
    port: int = 8474,
    config: list[dict] | None = None,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve the Toxiproxy API on host:port until `stop` is set (forever if None).

    `config` proxies are created before the API accepts requests. `on_ready(host, port)` is
    called once the API listens (port 0 picks a free port; `on_ready` tells which).
    """
    collection = ProxyCollection()
    if config:
        try:
            await collection.populate(config)
        except ApiError as exc:
            raise ProxyServerError(f"invalid proxy config: {exc.message}") from exc
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(collection), log_level="warning", access_log=False, lifespan="off"
        )
    )
    # Signals are ours (see __main__): uvicorn must neither install handlers nor re-raise them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise ProxyServerError(
                    f"the fault proxy API on {host}:{bound_port} stopped while starting"
                )
            await asyncio.sleep(0.01)
        log.info("fault proxy API listening on http://%s:%d", host, bound_port)
        if on_ready is not None:
            on_ready(host, bound_port)
        waiters = [serving]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        await collection.close()
        sock.close()


class BackgroundProxyServer:
    """The fault proxy in a background thread with its own event loop.

    >>> with BackgroundProxyServer() as proxy:     # API on a free loopback port
    ...     httpx.post(f"{proxy.url}/proxies", json={...})
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, config: list[dict] | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.config = config
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ProxyServerError(f"the fault proxy did not start within {timeout:.0f}s")
        if self._error is not None:
            raise ProxyServerError(f"the fault proxy failed to start: {self._error}")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(self.host, self.port, self.config, stop=self._stop, on_ready=self._on_ready)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to start(); a thread has nobody else to tell
            self._error = exc
        finally:
            self._ready.set()

    def _on_ready(self, host: str, port: int) -> None:
        self.port = port
        self._ready.set()

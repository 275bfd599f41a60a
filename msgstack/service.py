"""How every long-running msgstack process lives: resources, a background worker, HTTP, shutdown.

Each service is a Starlette app served by uvicorn on MSGSTACK_PORT. uvicorn turns SIGTERM/SIGINT
into a graceful shutdown; the lifespan then tells the worker to stop (it finishes its batch), waits
a bounded time for it, and closes the pools.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from msgstack import db, gctune, health, metrics, storage, streams
from msgstack.config import Settings

__all__ = ["Resources", "Worker", "build_app", "serve"]

log = logging.getLogger("msgstack.service")

WORKER_STOP_TIMEOUT = 4.0
CLOSE_TIMEOUT = 2.0


@dataclass
class Resources:
    """What a service's handlers and worker share."""

    settings: Settings
    # the one road to PostgreSQL and Redis: the adapters over the process' pool and client
    storage: storage.Storage
    # extra /readyz checks a worker adds (name -> coroutine answering "ok" or why not)
    checks: dict[str, Callable[[], Awaitable[str]]] = field(default_factory=dict)


Worker = Callable[[Resources, asyncio.Event], Awaitable[None]]


def _worker_ended(stop: asyncio.Event, task: asyncio.Task) -> None:
    # A service whose worker died must not look healthy: stop the whole process.
    if stop.is_set() or task.cancelled():
        return
    exc = task.exception()
    log.critical(
        "worker stopped unexpectedly (%s); shutting the service down",
        db.describe(exc) if exc else "returned",
    )
    os.kill(os.getpid(), signal.SIGTERM)


def build_app(
    settings: Settings,
    routes: list[BaseRoute],
    worker: Worker | None = None,
    middleware: list[Middleware] | None = None,
) -> Starlette:
    """A Starlette app serving `routes` plus /healthz, /readyz, /metrics, running `worker`."""

    @asynccontextmanager
    async def lifespan(app: Starlette):
        gctune.install(os.environ)
        tuning = storage.load()
        pool = await db.create_pool(settings.pg_dsn, settings.pool_max, tuning.statement_timeout_s)
        client = streams.client(settings.redis_url, settings.redis_pool_max)
        metrics.REDIS_POOL_MAX.set(settings.redis_pool_max)
        metrics.REDIS_POOL_IN_USE.set_function(lambda: streams.pool_in_use(client))
        metrics.REDIS_POOL_UTILIZATION.set_function(
            lambda: streams.pool_in_use(client) / settings.redis_pool_max
        )
        res = Resources(settings, storage.Storage.create(pool, client, tuning))
        app.state.resources = res
        stop = asyncio.Event()
        task = None
        if worker is not None:
            task = asyncio.create_task(worker(res, stop))
            task.add_done_callback(lambda t: _worker_ended(stop, t))
        gctune.after_start(os.environ)
        log.info("listening on %s:%s", settings.host, settings.port)
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                try:
                    await asyncio.wait_for(task, WORKER_STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("worker did not stop within %.0fs; cancelled", WORKER_STOP_TIMEOUT)
                except Exception:  # noqa: BLE001
                    log.debug("worker ended with an error (logged when it happened)")
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                pool.terminate()
            await client.aclose()
            log.info("stopped")

    return Starlette(
        routes=[*routes, *health.routes()], lifespan=lifespan, middleware=middleware or []
    )


def serve(app: Starlette | str, settings: Settings, workers: int = 1) -> None:
    """Serve `app` until SIGTERM/SIGINT.

    With `workers` > 1, `app` is the import string of an app factory ("module:function") and
    uvicorn's supervisor (this process) runs that many worker processes on the one port; it
    stops them on SIGTERM and replaces a worker that dies.
    """
    options = dict(
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        # Longer than a load client keeps an idle connection: with uvicorn's default (5 s) the
        # server closes idle keep-alive connections just as clients reuse them, and the requests
        # on them fail with EOF/reset (seen as server errors in pool_exhaustion at 200/s).
        timeout_keep_alive=75,
        # No service reads the client's address, so X-Forwarded-* need no rewriting (uvicorn's
        # ProxyHeadersMiddleware is one more ASGI layer on every request), and no Server header.
        proxy_headers=False,
        server_header=False,
    )
    if workers > 1:
        if not isinstance(app, str):
            raise TypeError("several workers need the app as a 'module:factory' import string")
        uvicorn.run(app, factory=True, workers=workers, **options)
        return
    uvicorn.Server(uvicorn.Config(app, **options)).run()

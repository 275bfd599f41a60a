"""/healthz, /readyz and /metrics, served the same way by every service.

Readiness checks each dependency with a short timeout so a partitioned dependency makes /readyz
answer 503 quickly instead of hanging the probe (through the storage adapters' `ping`: the same
pool and client as the work, no breaker sample), plus the checks a worker adds to its
`Resources.checks` (the consumer's "progress": ready means it keeps up, not only that Redis
answers PING).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from msgstack import mutants
from msgstack.db import describe

if TYPE_CHECKING:
    from msgstack.storage import PostgresAdapter, StreamAdapter

__all__ = ["check_postgres", "check_redis", "routes"]

CHECK_TIMEOUT = 1.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


_postgres_ok_at = 0.0  # only ever read by the health_memo_postgres_ok mutant


async def check_postgres(postgres: PostgresAdapter) -> str:
    """ "ok", or why PostgreSQL cannot answer a trivial query right now."""
    global _postgres_ok_at
    # MUTANT: a success is trusted for 3 s without asking (failures are always re-checked)
    if mutants.on("health_memo_postgres_ok") and time.monotonic() - _postgres_ok_at < 3.0:
        return "ok"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await postgres.ping()
        _postgres_ok_at = time.monotonic()
        return "ok"
    except TimeoutError:
        return f"timeout after {CHECK_TIMEOUT:.0f}s"
    except Exception as exc:  # noqa: BLE001 - any failure is a readiness answer, never a crash
        return describe(exc)


_stuck_redis: str | None = None  # only ever set by the health_sticky_redis mutant


async def check_redis(stream: StreamAdapter) -> str:
    """ "ok", or why Redis cannot answer PING right now."""
    global _stuck_redis
    if _stuck_redis is not None:
        return _stuck_redis
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await stream.ping()
        return "ok"
    except TimeoutError:
        answer = f"timeout after {CHECK_TIMEOUT:.0f}s"
    except Exception as exc:  # noqa: BLE001
        answer = describe(exc)
    if mutants.on("health_sticky_redis"):  # MUTANT: the first failure sticks, never re-checked
        _stuck_redis = f"{answer} (MUTANT: stuck)"
    return answer


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    res = request.app.state.resources
    extra = dict(res.checks)
    pg, rd, *answers = await asyncio.gather(
        check_postgres(res.storage.postgres),
        check_redis(res.storage.stream),
        *(check() for check in extra.values()),
    )
    checks = {"postgres": pg, "redis": rd, **dict(zip(extra, answers))}
    ok = all(v == "ok" for v in checks.values())
    status = 200 if ok else 503
    if not ok and mutants.on("health_500_when_degraded"):  # MUTANT: a degraded check raises
        status = 500
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status_code=status
    )


async def metrics(request: Request) -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


def exposition() -> bytes:
    """The process' metrics; with several worker processes (PROMETHEUS_MULTIPROC_DIR set by
    `python -m msgstack api`) the sum over all of them, whichever worker answers the scrape."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(ServiceProcessCollector())
        return generate_latest(registry)
    return generate_latest()


class ServiceProcessCollector:
    """The standard `process_*` metrics for a service made of a supervisor and its worker
    processes (multiprocess mode drops the per-process collector): resident and virtual memory
    and CPU time summed over the supervisor and all its children, start time of the supervisor.
    So a memory verdict on the API sees the whole service, whichever worker is scraped."""

    def collect(self):
        try:
            root = psutil.Process(os.getppid())
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = vms = cpu = 0.0
        for proc in family:
            try:
                with proc.oneshot():
                    memory, times = proc.memory_info(), proc.cpu_times()
            except psutil.Error:
                continue  # a worker that exited meanwhile
            rss, vms = rss + memory.rss, vms + memory.vms
            cpu += times.user + times.system
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of the service's processes", rss
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory of the service's processes", vms
        )
        yield CounterMetricFamily(
            "process_cpu_seconds", "CPU time of the service's processes", value=cpu
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the service (its supervisor)",
            root.create_time(),
        )


def routes() -> list[Route]:
    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]

"""The PostgreSQL adapter: pooled work under a bounded wait, retries and a breaker.

A unit of work gets a pooled connection (waiting at most ``MSGSTACK_PG_ACQUIRE_TIMEOUT_S``; a pool
that stays exhausted raises `PoolExhausted`, a TimeoutError) and gives it back on every path,
errors included. While work waits for a connection it counts in ``storage_pool_waiting``; the pool
gauges (max, size, in use) are read from asyncpg's public counters at each scrape.
Only connection-level failures are retried, and only for idempotent work: a timeout is not retried
(another wait on a saturated pool only deepens the queue). `ping` is the readiness question
("does PostgreSQL answer a trivial query on a pooled connection?"): the same pool and accounting,
but neither retried nor a breaker sample (see its docstring).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from msgstack import db, mutants
from msgstack.storage import metrics
from msgstack.storage.guard import Guard
from msgstack.storage.settings import StorageSettings

__all__ = ["PoolExhausted", "PostgresAdapter", "is_failure", "is_retryable"]

T = TypeVar("T")


class PoolExhausted(db.PoolExhausted):
    """Every pooled connection stayed busy for the acquire timeout."""

    def __init__(self, max_size: int, waited: float) -> None:
        TimeoutError.__init__(
            self,
            f"all {max_size} PostgreSQL connections stayed busy for {waited:g}s; "
            "lower the load or raise MSGSTACK_POOL_MAX",
        )


def is_failure(exc: BaseException) -> bool:
    """PostgreSQL itself is in trouble (unreachable, timed out, overloaded, not migrated)."""
    return isinstance(exc, db.TRANSIENT_ERRORS)


def is_retryable(exc: BaseException) -> bool:
    """A connection died under the work: a fresh one may well succeed."""
    if isinstance(exc, TimeoutError | asyncpg.UndefinedTableError):
        return False
    return isinstance(exc, db.TRANSIENT_ERRORS)


class PostgresAdapter:
    name = "postgres"

    def __init__(self, pool: asyncpg.Pool, settings: StorageSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.guard = Guard(self.name, settings, is_failure, is_retryable)
        metrics.POOL_MAX.set(pool.get_max_size())
        # set on every acquire and release rather than by set_function: the API runs several
        # worker processes with Prometheus multiprocess mode, which exports no callback gauges.
        # In use is counted here (asyncpg's get_size/get_idle_size walk every pooled connection,
        # a few percent of the API's CPU per request when read twice per operation); the open
        # connections are read from asyncpg at most every POOL_SIZE_EVERY_S, and at once when
        # more are in use than last read.
        self._in_use = 0
        self._size = 0
        self._size_read = 0.0
        self._gauge_pool()

    POOL_SIZE_EVERY_S = 0.5

    def _gauge_pool(self, delta: int = 0) -> None:
        self._in_use += delta
        metrics.POOL_IN_USE.set(self._in_use)
        now = time.monotonic()
        if now - self._size_read >= self.POOL_SIZE_EVERY_S or self._in_use > self._size:
            self._size_read = now
            self._size = self.pool.get_size()
            metrics.POOL_SIZE.set(self._size)

    async def run(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], idempotent: bool = True
    ) -> T:
        """Run `work(conn)` on a pooled connection (BreakerOpen, PoolExhausted or its error)."""

        async def attempt() -> T:
            conn = await self._acquire()
            self._gauge_pool(+1)
            if mutants.on("storage_leak_on_error"):  # MUTANT: an error skips the release
                result = await work(conn)
                await self.pool.release(conn)
                self._gauge_pool(-1)
                return result
            try:
                return await work(conn)
            finally:
                await self._release(conn)

        return await self.guard.call(attempt, retry=idempotent)

    async def ping(self) -> None:
        """``SELECT 1`` on a pooled connection, for /readyz (the caller bounds the wait).

        Not a breaker sample and not retried: a readiness probe observes PostgreSQL. As a sample,
        each answered probe would reset the breaker's count of consecutive failures while the
        real work keeps failing (a locked table: ``SELECT 1`` answers, the writes time out), and
        an open breaker would hide whether PostgreSQL answers again.
        """
        conn = await self._acquire()
        self._gauge_pool(+1)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self.pool.release(conn)
        finally:  # counted back even if the release itself failed or was cancelled
            self._gauge_pool(-1)

    async def _acquire(self) -> asyncpg.Connection:
        metrics.POOL_WAITING.inc()
        try:
            return await self.pool.acquire(timeout=self.settings.acquire_timeout_s)
        except TimeoutError:
            metrics.POOL_TIMEOUTS.inc()
            raise PoolExhausted(self.pool.get_max_size(), self.settings.acquire_timeout_s) from None
        finally:
            metrics.POOL_WAITING.dec()

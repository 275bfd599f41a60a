"""The Redis stream adapter: every stream command of the services under a timeout and a breaker.

The API's events, the dispatcher's XADD pipelines, the consumer's group reads, acknowledgements
and reclaims, the gateway's reads and resumes: each is `run(work)`, `work` getting the client.
Connection failures are retried (the consumer's deliveries ledger absorbs a duplicate entry a
retried publish may leave); a timeout is not, since the entry may have been written. A blocking
read passes a `timeout` above its BLOCK. `ping` is the readiness question (no breaker sample).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from msgstack import streams
from msgstack.storage.guard import Guard
from msgstack.storage.settings import StorageSettings

__all__ = ["StreamAdapter", "is_failure", "is_retryable", "run_redis"]

T = TypeVar("T")


def is_failure(exc: BaseException) -> bool:
    return isinstance(exc, streams.TRANSIENT_ERRORS)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RedisConnectionError | ConnectionError) and not isinstance(
        exc, TimeoutError
    )


async def run_redis(
    guard: Guard,
    client: aioredis.Redis,
    work: Callable[[aioredis.Redis], Awaitable[T]],
    limit: float,
    retry: bool,
) -> T:
    """`work(client)` within `limit` seconds, under `guard` (the stream and cache adapters)."""

    async def attempt() -> T:
        async with asyncio.timeout(limit):
            return await work(client)

    return await guard.call(attempt, retry=retry)


class StreamAdapter:
    name = "stream"

    def __init__(self, client: aioredis.Redis, settings: StorageSettings) -> None:
        self.client = client
        self.settings = settings
        self.guard = Guard(self.name, settings, is_failure, is_retryable)

    async def run(
        self,
        work: Callable[[aioredis.Redis], Awaitable[T]],
        timeout: float | None = None,
        retry: bool = True,
    ) -> T:
        """Run `work(client)` (e.g. a pipeline of XADDs) within `timeout` under the breaker;
        `retry=False` for work a repeat could double (a MULTI that may have run)."""
        return await run_redis(
            self.guard, self.client, work, timeout or self.settings.redis_timeout_s, retry
        )

    async def ping(self) -> None:
        """PING, for /readyz (the caller bounds the wait): not a breaker sample, like
        `PostgresAdapter.ping`."""
        await self.client.ping()

    async def publish(self, stream: str, fields: dict[str, str], maxlen: int | None = None) -> str:
        """XADD one entry (approximately trimmed to `maxlen`); return its id."""
        entry = await self.run(
            lambda c: c.xadd(stream, fields, maxlen=maxlen, approximate=maxlen is not None)
        )
        return entry.decode() if isinstance(entry, bytes) else str(entry)

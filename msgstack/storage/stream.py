"""The Redis stream adapter: XADD (one entry, or a pipeline of them) under a timeout and a breaker.

Connection failures are retried (the consumer's deliveries ledger absorbs a duplicate entry a
retried publish may leave); a timeout is not, since the entry may have been written.
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

__all__ = ["StreamAdapter", "is_failure", "is_retryable"]

T = TypeVar("T")


def is_failure(exc: BaseException) -> bool:
    return isinstance(exc, streams.TRANSIENT_ERRORS)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RedisConnectionError | ConnectionError) and not isinstance(
        exc, TimeoutError
    )


class StreamAdapter:
    name = "stream"

    def __init__(self, client: aioredis.Redis, settings: StorageSettings) -> None:
        self.client = client
        self.settings = settings
        self.guard = Guard(self.name, settings, is_failure, is_retryable)

    async def run(
        self, work: Callable[[aioredis.Redis], Awaitable[T]], timeout: float | None = None
    ) -> T:
        """Run `work(client)` (e.g. a pipeline of XADDs) within `timeout` under the breaker."""
        limit = self.settings.redis_timeout_s if timeout is None else timeout

        async def attempt() -> T:
            async with asyncio.timeout(limit):
                return await work(self.client)

        return await self.guard.call(attempt)

    async def publish(self, stream: str, fields: dict[str, str], maxlen: int | None = None) -> str:
        """XADD one entry (approximately trimmed to `maxlen`); return its id."""
        entry = await self.run(
            lambda c: c.xadd(stream, fields, maxlen=maxlen, approximate=maxlen is not None)
        )
        return entry.decode() if isinstance(entry, bytes) else str(entry)

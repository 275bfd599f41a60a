"""The cache adapter: Redis as a key store, a read-through cache in front of PostgreSQL loaders.

`run(work)` is the road of the services' other key commands (the auth tokens, the participant
cache's invalidations): the same timeout and breaker, `work` getting the client; `subscription`
hands out a pub/sub connection (a long-lived reader keeps its own deadline, see
msgstack.participants.listen).

A hit is answered from Redis; a miss runs the loader (through the PostgreSQL adapter) and stores
the value for ``MSGSTACK_CACHE_TTL_S``. The cache is an optimisation, never a dependency: when
Redis fails or the cache breaker is open, reads go to the loader (counted as misses) and the
answer is still served.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from msgstack import mutants, streams
from msgstack.storage import metrics
from msgstack.storage.guard import Guard
from msgstack.storage.settings import StorageSettings
from msgstack.storage.stream import is_failure, is_retryable, run_redis

__all__ = ["CacheAdapter"]

log = logging.getLogger("msgstack.storage.cache")

T = TypeVar("T")


class CacheAdapter:
    name = "cache"

    def __init__(self, client: aioredis.Redis, settings: StorageSettings) -> None:
        self.client = client
        self.settings = settings
        self.guard = Guard(self.name, settings, is_failure, is_retryable)
        self.hits = 0
        self.misses = 0

    async def get_or_load(
        self, key: str, loader: Callable[[], Awaitable[bytes]], ttl_s: int | None = None
    ) -> tuple[bytes, bool]:
        """The value of `key` and whether it came from the cache."""
        try:
            cached = await self.run(lambda r: r.get(key))
        except streams.TRANSIENT_ERRORS as exc:  # BreakerOpen included
            log.debug("cache read of %s skipped: %s", key, exc)
            cached = None
        if cached is not None:
            self._count(hit=True)
            return cached, True
        self._count(hit=False)
        value = await loader()
        ttl = ttl_s or self.settings.cache_ttl_s
        if mutants.on("storage_cache_never_fills"):  # MUTANT: the loaded value is not cached
            return value, False
        if mutants.on("storage_cache_expires_at_once"):  # MUTANT: milliseconds for seconds
            ttl = max(1, ttl // 1000)
        try:
            await self.run(lambda r: r.set(key, value, ex=ttl))
        except streams.TRANSIENT_ERRORS as exc:
            log.debug("cache fill of %s skipped: %s", key, exc)
        return value, False

    async def run(
        self,
        work: Callable[[aioredis.Redis], Awaitable[T]],
        timeout: float | None = None,
        retry: bool = True,
    ) -> T:
        """Run `work(client)` (a GET, a SET, a PUBLISH...) within `timeout` under the breaker."""
        return await run_redis(
            self.guard, self.client, work, timeout or self.settings.redis_timeout_s, retry
        )

    def subscription(self) -> PubSub:
        """A new pub/sub connection of this adapter's client (the caller subscribes, reads,
        pings and closes it)."""
        return self.client.pubsub()

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
            metrics.CACHE_HITS.inc()
        else:
            self.misses += 1
            metrics.CACHE_MISSES.inc()
        metrics.CACHE_HIT_RATIO.set(self.hits / (self.hits + self.misses))

"""The storage layer every service goes through: PostgreSQL, Redis stream and cache adapters.

The one road to each database: every PostgreSQL unit of work (`postgres.run`), stream command
(`stream.run`) and key or pub/sub command (`cache.run`, `cache.subscription`) of the services, and
their readiness checks (`postgres.ping`, `stream.ping`). `msgstack.db` and `msgstack.streams` only
create the pool and the client; tests/test_boundaries.py fails on a raw call anywhere else.

Each adapter runs its work under a timeout, bounded retries with jittered backoff and a circuit
breaker (`msgstack.storage.guard`), and reports the plan's metrics (`msgstack.storage.metrics`):
``storage_retries_total``, ``storage_circuit_breaker_transitions{adapter,state}``,
``storage_errors_total{adapter,type}``, ``storage_cache_hit_ratio`` and the pool gauges.
While a breaker is open its adapter raises `BreakerOpen` at once (the API answers 503).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from msgstack.storage.cache import CacheAdapter
from msgstack.storage.guard import BreakerOpen, error_type
from msgstack.storage.postgres import PoolExhausted, PostgresAdapter
from msgstack.storage.settings import StorageSettings, load
from msgstack.storage.stream import StreamAdapter

__all__ = [
    "BreakerOpen",
    "CacheAdapter",
    "PoolExhausted",
    "PostgresAdapter",
    "Storage",
    "StorageSettings",
    "StreamAdapter",
    "error_type",
    "load",
]


@dataclass
class Storage:
    """The three adapters of one process, sharing its pool and Redis client."""

    settings: StorageSettings
    postgres: PostgresAdapter
    stream: StreamAdapter
    cache: CacheAdapter

    @classmethod
    def create(
        cls, pool: asyncpg.Pool, client: aioredis.Redis, settings: StorageSettings | None = None
    ) -> Storage:
        settings = settings or load()
        return cls(
            settings,
            PostgresAdapter(pool, settings),
            StreamAdapter(client, settings),
            CacheAdapter(client, settings),
        )

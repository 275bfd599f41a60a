"""Redis side shared by the services: client factory, transient errors and the stream entry format.

Only the client is made here; every command goes through the storage adapters (msgstack.storage:
the stream adapter for streams, the cache adapter for keys and pub/sub).

The entry fields are the contract in docs/reference-stack.md; the dispatcher encodes them here
and the consumer decodes them here, so the two cannot drift apart.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "SOCKET_TIMEOUT",
    "TRANSIENT_ERRORS",
    "BadEntry",
    "Entry",
    "client",
    "decode",
    "pool_in_use",
    "encode",
    "is_nogroup",
]

# Errors that mean "Redis is unreachable or restarting", not "Redis refused this command".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)


POOL_WAIT = 2.0  # a request waits this long for a free pooled connection, then fails (503)
# the longest one reply may take; the bound the pipeline workers' commands keep through the
# storage adapters (msgstack.storage), a blocking read adding its BLOCK
SOCKET_TIMEOUT = 5.0


def client(url: str, max_connections: int = 50) -> aioredis.Redis:
    """A Redis client that fails fast while Redis is down and reconnects by itself after.

    One immediate retry covers a pooled connection that died with a Redis restart; more retries
    would only hide an outage from the caller, who parks work and backs off instead.
    The socket timeout stays above the consumer's 1 s XREADGROUP block. The pool is bounded
    (MSGSTACK_REDIS_POOL_MAX): a burst waits up to POOL_WAIT for a connection instead of opening
    connections without limit, and its use is visible on /metrics.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT,
        socket_connect_timeout=1.0,
        socket_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)


def pool_in_use(client: aioredis.Redis) -> int:
    """Connections of `client`'s pool checked out right now (redis-py keeps no public count)."""
    return len(getattr(client.connection_pool, "_in_use_connections", ()))


@dataclass(frozen=True)
class Entry:
    """One stream entry: the message it announces and when the message was accepted."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    outbox_id: int
    created_at: float  # epoch seconds


class BadEntry(ValueError):
    """A stream entry that does not follow the contract (poison)."""


def encode(
    message_id: uuid.UUID, conversation_id: uuid.UUID, outbox_id: int, created_at: float
) -> dict[str, str]:
    return {
        "message_id": str(message_id),
        "conversation_id": str(conversation_id),
        "outbox_id": str(outbox_id),
        "created_at": repr(created_at),
    }


def decode(fields: dict[bytes, bytes] | None) -> Entry:
    if not fields:
        raise BadEntry("entry has no fields (deleted or empty)")
    try:
        return Entry(
            message_id=uuid.UUID(fields[b"message_id"].decode()),
            conversation_id=uuid.UUID(fields[b"conversation_id"].decode()),
            outbox_id=int(fields[b"outbox_id"]),
            created_at=float(fields[b"created_at"]),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise BadEntry(f"unparsable entry: {type(exc).__name__}: {exc}") from None


def is_nogroup(exc: BaseException) -> bool:
    """True when Redis lost the stream or group (e.g. restarted empty)."""
    return str(exc).startswith("NOGROUP")

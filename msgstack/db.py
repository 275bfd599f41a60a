"""PostgreSQL access shared by every service: a lazy asyncpg pool and the transient-error rules.

The pool starts with no connection (``min_size=0``) so a service starts and serves /healthz and
/readyz while PostgreSQL is down, and asyncpg opens fresh connections once it is back. Only the
pool is made here: every unit of work runs through the storage layer's PostgreSQL adapter
(msgstack.storage: bounded wait, retry of a connection that died under it, the breaker), with
`as_user_unit` for the acting user's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

__all__ = [
    "TRANSIENT_ERRORS",
    "PoolExhausted",
    "SchemaMissing",
    "as_user_unit",
    "create_pool",
    "describe",
]

log = logging.getLogger("msgstack.db")

CONNECT_TIMEOUT = 2.0  # a partitioned server must fail fast, not hang a request
COMMAND_TIMEOUT = 5.0
ACQUIRE_TIMEOUT = 2.0  # an exhausted pool answers 503 instead of queueing forever

# Errors after which the same work may succeed later (server down, restarted, overloaded).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.CrashShutdownError,
    # asyncpg's protocol state machine, when the server vanishes mid-operation ("cannot switch
    # to state 15; another operation is in progress"): the connection is broken, not the work.
    # Found by plan T11 (cascading_failure): it killed the dispatcher's worker when PostgreSQL
    # was SIGKILLed.
    asyncpg.InternalClientError,
    # Not migrated yet: wait for `msgstack migrate` like for an outage rather than give up on work.
    asyncpg.UndefinedTableError,
)

T = TypeVar("T")

SET_USER_SQL = "SELECT set_config('app.user_id', $1, true)"


class PoolExhausted(TimeoutError):
    """Every pooled connection stayed busy for ACQUIRE_TIMEOUT (transient, like any timeout)."""

    def __init__(self, max_size: int) -> None:
        super().__init__(
            f"all {max_size} PostgreSQL connections stayed busy for "
            f"{ACQUIRE_TIMEOUT:.0f}s; lower the load or raise MSGSTACK_POOL_MAX"
        )


class SchemaMissing(RuntimeError):
    """The messaging tables do not exist yet."""

    def __init__(self) -> None:
        super().__init__(
            "the messaging schema is missing: run `python -m msgstack migrate` "
            "against MSGSTACK_PG_DSN"
        )


def describe(exc: BaseException) -> str:
    """A one-line description without the DSN (which may hold a password)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def create_pool(
    dsn: str, max_size: int, command_timeout: float = COMMAND_TIMEOUT
) -> asyncpg.Pool:
    """A pool that connects on demand; never fails because PostgreSQL is down right now.

    `max_size` is MSGSTACK_POOL_MAX (the plan uses 20); `command_timeout` bounds each statement
    (MSGSTACK_PG_STATEMENT_TIMEOUT_S through msgstack.storage).
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=command_timeout,
        max_inactive_connection_lifetime=60.0,
        reset=_keep_session,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection needs no reset query: nothing session-level outlives our work.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``
    on every release, one round trip per unit of work. The services never take advisory locks,
    declare cursors, LISTEN or SET a session variable on a pooled connection: the acting user is
    set with ``set_config(..., true)``, local to its transaction. An open transaction (work
    cancelled halfway) is still rolled back: asyncpg does that before calling this hook.
    """


def as_user_unit(
    user_id: uuid.UUID, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> Callable[[asyncpg.Connection], Awaitable[T]]:
    """`work` wrapped in one transaction whose acting user is `user_id`, for a caller that
    brings its own connection (the storage adapter's `run`)."""

    async def unit(conn: asyncpg.Connection) -> T:
        async with conn.transaction():
            await conn.execute(SET_USER_SQL, str(user_id))
            return await work(conn)

    return unit

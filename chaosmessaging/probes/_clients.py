"""Connections the probes share: one place that turns an address into a client, and a
connection failure into an `ActivityFailed` a user can act on.

PostgreSQL goes through asyncpg (already a dependency of the stack) run with `asyncio.run`,
because Chaos Toolkit calls activities synchronously and we do not want a second driver.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging.config import lookup, redact

STACK_HINT = "is the stack up? `chaosmessaging stack status`"

# service name (as in the embedded stack) -> configuration key of its HTTP base URL
SERVICE_URL_KEYS = {
    "api": "messaging_api_url",
    "dispatcher": "messaging_dispatcher_url",
    "consumer": "messaging_consumer_url",
}


def redis_client(url: str = None, configuration: Configuration = None,
                 secrets: Secrets = None) -> tuple[redis.Redis, str]:
    """A sync redis-py client for `url` (or `messaging_redis_url`) and the URL it uses."""
    url = lookup("messaging_redis_url", configuration, secrets, url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10,
                                      decode_responses=True)
    except ValueError as error:
        raise ActivityFailed(f"invalid Redis URL {redact(url)}: {error}") from None
    return client, url


def redis_unreachable(url: str, error: Exception) -> ActivityFailed:
    return ActivityFailed(f"cannot reach Redis at {redact(url)}: {error} — {STACK_HINT}")


def pg_fetch(sql: str, args: Sequence[Any] = (), dsn: str = None,
             configuration: Configuration = None, secrets: Secrets = None,
             timeout: float = 10.0) -> list[asyncpg.Record]:
    """Run one read-only query on `dsn` (or `messaging_pg_dsn`) and return its rows."""
    dsn = lookup("messaging_pg_dsn", configuration, secrets, dsn)
    return asyncio.run(_pg_fetch(dsn, sql, tuple(args), timeout))


async def _pg_fetch(dsn: str, sql: str, args: tuple, timeout: float) -> list[asyncpg.Record]:
    where = redact(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = str(error) or type(error).__name__
        raise ActivityFailed(f"cannot connect to PostgreSQL at {where}: {redact(reason)} — "
                             f"check messaging_pg_dsn; {STACK_HINT}") from None
    try:
        # READ ONLY: probes (and users' own SQL through query_scalar) must never write
        async with conn.transaction(readonly=True):
            return await conn.fetch(sql, *args, timeout=timeout)
    except asyncpg.UndefinedTableError as error:
        raise ActivityFailed(f"{error} in {where} — is this the messaging database, and has its "
                             "schema been migrated (`python -m msgstack migrate`)?") from None
    except asyncpg.ReadOnlySQLTransactionError as error:
        raise ActivityFailed(f"probes only read: {error}") from None
    except (TimeoutError, asyncpg.PostgresError) as error:
        reason = str(error) or type(error).__name__
        raise ActivityFailed(f"query failed on {where}: {reason}") from None
    finally:
        await conn.close()


def service_url(service: str, url: str, path: str, configuration: Configuration = None,
                secrets: Secrets = None) -> str:
    """`url` as given, else `<base URL of service><path>` from configuration."""
    if url:
        return url
    key = SERVICE_URL_KEYS.get(service)
    if key is None:
        raise ActivityFailed(f"unknown service '{service}': use one of "
                             f"{sorted(SERVICE_URL_KEYS)} or pass a full url")
    base = str(lookup(key, configuration, secrets))
    if "://" not in base:
        base = f"http://{base}"
    return base.rstrip("/") + path


def http_get(url: str, timeout: float) -> httpx.Response:
    """GET `url`; an unreachable endpoint raises `ActivityFailed`."""
    try:
        return httpx.get(url, timeout=timeout)
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        raise ActivityFailed(f"cannot reach {redact(url)}: {reason} — {STACK_HINT}") from None

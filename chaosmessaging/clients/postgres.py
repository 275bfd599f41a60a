"""PostgreSQL: read-only queries for probes and verdicts.

asyncpg (already the stack's driver) run with `asyncio.run`, because Chaos Toolkit calls
activities synchronously and we do not want a second driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging import targets
from chaosmessaging.clients.http import STACK_HINT
from chaosmessaging.config import redact

__all__ = ["pg_fetch"]


def pg_fetch(
    sql: str,
    args: Sequence[Any] = (),
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    timeout: float = 10.0,
) -> list[asyncpg.Record]:
    """Run one read-only query on `dsn` (or `messaging_pg_dsn`) and return its rows."""
    dsn = targets.address("messaging_pg_dsn", configuration, secrets, dsn)
    return asyncio.run(_pg_fetch(dsn, sql, tuple(args), timeout))


async def _pg_fetch(dsn: str, sql: str, args: tuple, timeout: float) -> list[asyncpg.Record]:
    where = redact(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = str(error) or type(error).__name__
        raise ActivityFailed(
            f"cannot connect to PostgreSQL at {where}: {redact(reason)} — "
            f"check messaging_pg_dsn; {STACK_HINT}"
        ) from None
    try:
        # READ ONLY: probes (and users' own SQL through query_scalar) must never write
        async with conn.transaction(readonly=True):
            return await conn.fetch(sql, *args, timeout=timeout)
    except asyncpg.UndefinedTableError as error:
        raise ActivityFailed(
            f"{error} in {where} — is this the messaging database, and has its "
            "schema been migrated (`python -m msgstack migrate`)?"
        ) from None
    except asyncpg.ReadOnlySQLTransactionError as error:
        raise ActivityFailed(f"probes only read: {error}") from None
    except (TimeoutError, asyncpg.PostgresError) as error:
        reason = str(error) or type(error).__name__
        raise ActivityFailed(f"query failed on {where}: {reason}") from None
    finally:
        await conn.close()

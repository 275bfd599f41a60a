"""Test-only activities that break the pipeline's promises behind its back, so tests can prove
the experiments' verdicts fail (and name what was lost) when the system really loses messages.

Loaded by `chaos run` from tests via PYTHONPATH; never part of the extension.
"""

import asyncio

import asyncpg
import redis

from chaosmessaging import runs
from chaosmessaging.config import lookup
from chaosmessaging.util import home_of


def drop_deliveries(count: int = 3, configuration: dict = None, secrets: dict = None) -> list:
    """Delete `count` delivery rows of this run's messages; return their client_msg_ids."""
    dsn = lookup("messaging_pg_dsn", configuration, secrets)
    prefix = runs.message_prefix(None, home_of(configuration))

    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "DELETE FROM deliveries WHERE message_id IN (SELECT m.id FROM messages m "
                "JOIN deliveries d ON d.message_id = m.id WHERE starts_with(m.client_msg_id, $1) "
                "ORDER BY m.created_at LIMIT $2) "
                "RETURNING (SELECT client_msg_id FROM messages WHERE id = message_id)",
                prefix,
                int(count),
            )
            return [r[0] for r in rows]
        finally:
            await conn.close()

    return asyncio.run(go())


def ack_pending_without_delivery(configuration: dict = None, secrets: dict = None) -> int:
    """XACK every pending entry of the group as if the consumer had dropped its batch: the
    entries leave the PEL and any ledger row of theirs is removed (the kill may have landed
    between the ledger commit and XACK). Returns how many entries were dropped."""
    client = redis.Redis.from_url(
        lookup("messaging_redis_url", configuration, secrets), decode_responses=True
    )
    stream = lookup("messaging_stream", configuration, secrets)
    group = lookup("messaging_group", configuration, secrets)
    ids = [p["message_id"] for p in client.xpending_range(stream, group, "-", "+", 100000)]
    if not ids:
        return 0
    message_ids = [client.xrange(stream, i, i)[0][1]["message_id"] for i in ids]
    dsn = lookup("messaging_pg_dsn", configuration, secrets)

    async def forget():
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "DELETE FROM deliveries WHERE message_id = ANY($1::uuid[])", message_ids
            )
        finally:
            await conn.close()

    asyncio.run(forget())
    return client.xack(stream, group, *ids)


BROKEN = "broken:"


def _users_sql(query: str, configuration: dict, secrets: dict) -> int:
    dsn = lookup("messaging_pg_dsn", configuration, secrets)
    prefix = lookup("messaging_loadtest_prefix", configuration, secrets)

    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            done = await conn.execute(query, f"{prefix}-", BROKEN)
            return int(done.split()[-1])
        finally:
            await conn.close()

    return asyncio.run(go())


def corrupt_login_passwords(configuration: dict = None, secrets: dict = None) -> int:
    """Make every load-test user's stored hash unusable: their logins start failing (401)."""
    return _users_sql(
        "UPDATE users SET password_hash = $2 || password_hash WHERE "
        "starts_with(username, $1) AND NOT starts_with(password_hash, $2)",
        configuration,
        secrets,
    )


def restore_login_passwords(configuration: dict = None, secrets: dict = None) -> int:
    """Undo corrupt_login_passwords."""
    return _users_sql(
        "UPDATE users SET password_hash = substr(password_hash, length($2) + 1) "
        "WHERE starts_with(username, $1) AND starts_with(password_hash, $2)",
        configuration,
        secrets,
    )


def permit_every_conversation(configuration: dict = None, secrets: dict = None) -> str:
    """Replace the API role's SELECT policy on conversations with one that lets everyone read
    every conversation: the dropped policy the T2 authorization verdict must catch.
    Undo with `restore_conversation_policy`."""
    return _owner_sql(
        configuration,
        secrets,
        "DROP POLICY IF EXISTS api_select ON conversations; "
        "CREATE POLICY api_select ON conversations FOR SELECT TO msgstack_api USING (true)",
    )


def restore_conversation_policy(configuration: dict = None, secrets: dict = None) -> str:
    """Put migration 0004's participant-only SELECT policy on conversations back."""
    return _owner_sql(
        configuration,
        secrets,
        "DROP POLICY IF EXISTS api_select ON conversations; "
        "CREATE POLICY api_select ON conversations FOR SELECT TO msgstack_api "
        "USING (msgstack_is_participant(id))",
    )


def _owner_sql(configuration: dict, secrets: dict, statements: str) -> str:
    dsn = lookup("messaging_pg_dsn", configuration, secrets)

    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.execute(statements)
        finally:
            await conn.close()

    return asyncio.run(go())

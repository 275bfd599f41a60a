"""Row-level security alone keeps users apart (migration 0004), proven at the SQL level.

Queries here have NO user filter at all: they run as the API's database role with only the acting
user set for the transaction, exactly as the API runs them. A dropped/disabled policy must show up
as a leak, so one test sabotages the table and expects the very same query to leak.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from test_msgstack_api import add_user, fresh_env, role_dsn, sql

ALICE, BOB = uuid.uuid4(), uuid.uuid4()
A_CONV, B_CONV = uuid.uuid4(), uuid.uuid4()


@pytest.fixture(scope="module")
def env(postgres_server, redis_server) -> dict[str, str]:
    env = fresh_env(postgres_server, redis_server.url)
    owner = env["MSGSTACK_PG_DSN"]
    for user, conv in ((ALICE, A_CONV), (BOB, B_CONV)):
        add_user(env, user)
        sql(
            owner,
            "INSERT INTO conversations (id, title, created_by) VALUES ($1, 'x', $2)",
            conv,
            user,
        )
        sql(owner, "INSERT INTO participants VALUES ($1, $2)", conv, user)
        sql(
            owner,
            "INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, "
            "size_bytes) VALUES ($1, $2, $3, 'x', 1)",
            uuid.uuid4(),
            conv,
            f"rls-{conv}",
        )
    return env


def as_user(dsn: str, role: str, user: uuid.UUID | None, query: str, *args):
    """Run `query` as `role` in one transaction whose acting user is `user`."""

    async def run():
        conn = await asyncpg.connect(role_dsn(dsn, role))
        try:
            async with conn.transaction():
                if user is not None:
                    await conn.execute("SELECT set_config('app.user_id', $1, true)", str(user))
                return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


UNFILTERED = {
    "conversations": "SELECT id AS conv FROM conversations",
    "participants": "SELECT conversation_id AS conv FROM participants",
    "messages": "SELECT conversation_id AS conv FROM messages",
}


@pytest.mark.parametrize("table", sorted(UNFILTERED))
def test_unfiltered_query_as_api_role_returns_only_the_acting_users_rows(env, table):
    dsn = env["MSGSTACK_PG_DSN"]
    seen = {r["conv"] for r in as_user(dsn, "msgstack_api", ALICE, UNFILTERED[table])}
    assert A_CONV in seen and B_CONV not in seen
    seen = {r["conv"] for r in as_user(dsn, "msgstack_api", BOB, UNFILTERED[table])}
    assert B_CONV in seen and A_CONV not in seen
    assert as_user(dsn, "msgstack_api", None, UNFILTERED[table]) == []  # no acting user: nothing


def test_service_roles_are_neither_owner_nor_bypassrls_nor_superuser(env):
    rows = sql(
        env["MSGSTACK_PG_DSN"],
        "SELECT r.rolname, r.rolsuper, r.rolbypassrls, "
        "EXISTS (SELECT 1 FROM pg_tables t WHERE t.tableowner = r.rolname) AS owns "
        "FROM pg_roles r WHERE r.rolname IN ('msgstack_api', 'msgstack_auth', 'msgstack_pipeline')",
    )
    assert {r["rolname"] for r in rows} == {"msgstack_api", "msgstack_auth", "msgstack_pipeline"}
    assert not any(r["rolsuper"] or r["rolbypassrls"] or r["owns"] for r in rows)


def test_api_role_cannot_write_into_or_move_rows_to_anothers_conversation(env):
    dsn = env["MSGSTACK_PG_DSN"]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        as_user(
            dsn, "msgstack_api", ALICE, "INSERT INTO participants VALUES ($1, $2)", B_CONV, ALICE
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        as_user(
            dsn,
            "msgstack_api",
            ALICE,
            "INSERT INTO messages (id, conversation_id, "
            "client_msg_id, ciphertext, size_bytes) VALUES ($1, $2, 'intruder', 'x', 1)",
            uuid.uuid4(),
            B_CONV,
        )
    changed = as_user(
        dsn, "msgstack_api", ALICE, "UPDATE conversations SET title = 'pwned' RETURNING id"
    )
    deleted = as_user(
        dsn,
        "msgstack_api",
        ALICE,
        "DELETE FROM participants WHERE conversation_id = $1 RETURNING user_id",
        B_CONV,
    )
    assert [r["id"] for r in changed] == [A_CONV] and deleted == []


def test_the_api_one_statement_write_is_judged_as_its_acting_user_and_leaves_no_user_behind(env):
    """msgstack.api.WRITE_SQL carries the acting user inside the insert statement (no explicit
    transaction): a participant's message goes in with its outbox row, a non-participant's is
    refused by the policy, and the setting does not outlive the statement on the connection."""
    from msgstack.api import WRITE_SQL

    async def run():
        conn = await asyncpg.connect(role_dsn(env["MSGSTACK_PG_DSN"], "msgstack_api"))
        try:
            mine = uuid.uuid4()
            written = await conn.fetchval(
                WRITE_SQL, mine, A_CONV, f"one-statement-{mine}", b"x" * 8, 8, str(ALICE)
            )
            after = await conn.fetchval("SELECT current_setting('app.user_id', true)")
            again = await conn.fetchval(
                WRITE_SQL, uuid.uuid4(), A_CONV, f"one-statement-{mine}", b"x" * 8, 8, str(ALICE)
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(
                    WRITE_SQL, uuid.uuid4(), B_CONV, "one-statement-intruder", b"x", 1, str(ALICE)
                )
            nobody = await conn.fetchval("SELECT count(*) FROM messages")
            return mine, written, after, again, nobody
        finally:
            await conn.close()

    mine, written, after, again, nobody = asyncio.run(run())
    assert written == mine
    assert again is None  # a repeated client_msg_id inserts nothing
    assert after in (None, "")  # no acting user left on the connection
    assert nobody == 0  # outside the statement, no user: row-level security shows nothing
    owner = env["MSGSTACK_PG_DSN"]
    assert sql(owner, "SELECT count(*) AS n FROM outbox WHERE message_id = $1", mine)[0]["n"] == 1
    intruder = "SELECT count(*) AS n FROM messages WHERE client_msg_id = 'one-statement-intruder'"
    assert sql(owner, intruder)[0]["n"] == 0


def test_pipeline_role_sees_every_message_but_no_conversation(env):
    dsn = env["MSGSTACK_PG_DSN"]
    seen = {r["conv"] for r in as_user(dsn, "msgstack_pipeline", None, UNFILTERED["messages"])}
    assert {A_CONV, B_CONV} <= seen
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        as_user(dsn, "msgstack_pipeline", None, UNFILTERED["conversations"])


def test_a_disabled_policy_leaks_the_other_users_rows(postgres_server, redis_server):
    """Sabotage: the same unfiltered query leaks once the table's row-level security is off,
    so the tests above would catch a migration that forgot or dropped a policy."""
    env = fresh_env(postgres_server, redis_server.url)
    owner = env["MSGSTACK_PG_DSN"]
    conv = uuid.uuid4()
    sql(owner, "INSERT INTO conversations (id, created_by) VALUES ($1, $2)", conv, BOB)
    assert as_user(owner, "msgstack_api", ALICE, UNFILTERED["conversations"]) == []
    sql(owner, "DROP POLICY api_select ON conversations")
    sql(owner, "CREATE POLICY api_select ON conversations FOR SELECT TO msgstack_api USING (true)")
    leaked = as_user(owner, "msgstack_api", ALICE, UNFILTERED["conversations"])
    assert conv in {r["conv"] for r in leaked}

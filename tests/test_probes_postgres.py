"""Outbox probes, read-only SQL and message accounting against a real private PostgreSQL.

The schema is the reference stack's own migrations (msgstack/migrations/*.sql) when present,
else the tables of docs/reference-stack.md.
"""

import asyncio
import json
import re
import threading
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis
from chaoslib.exceptions import ActivityFailed

from chaosmessaging.probes import accounting, postgres
from chaosmessaging.stack import servers

MIGRATIONS = Path(__file__).resolve().parents[1] / "msgstack" / "migrations"

_FALLBACK_SCHEMA = """
CREATE TABLE messages (id uuid PRIMARY KEY, conversation_id uuid NOT NULL,
  client_msg_id text NOT NULL UNIQUE, ciphertext bytea NOT NULL, size_bytes int NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE outbox (id bigserial PRIMARY KEY, message_id uuid NOT NULL REFERENCES messages (id),
  created_at timestamptz NOT NULL DEFAULT now(), dispatched_at timestamptz, stream_id text,
  attempts int NOT NULL DEFAULT 0, parked_at timestamptz, last_error text);
CREATE TABLE deliveries (message_id uuid PRIMARY KEY REFERENCES messages (id),
  stream_id text NOT NULL, consumer text NOT NULL,
  delivered_at timestamptz NOT NULL DEFAULT now(), redeliveries int NOT NULL DEFAULT 0);
"""


def _run(coro):
    return asyncio.run(coro)


async def _execute(dsn: str, sql: str, *args) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _create_schema(dsn: str) -> None:
    files = sorted(MIGRATIONS.glob("*.sql"))
    conn = await asyncpg.connect(dsn)
    try:
        if not files:
            await conn.execute(_FALLBACK_SCHEMA)
        for path in files:
            text = path.read_text()
            if "no-transaction" in text.split("\n", 1)[0]:
                # CREATE INDEX CONCURRENTLY cannot share a transaction: one statement at a time
                for statement in re.split(r";\s*\n", text):
                    code = "\n".join(
                        line for line in statement.splitlines() if not line.strip().startswith("--")
                    )
                    if code.strip():
                        await conn.execute(code)
            else:
                await conn.execute(text)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def dsn(postgres_server):
    name = f"probes_{uuid.uuid4().hex[:8]}"
    servers.create_database(postgres_server.host, postgres_server.port, name)
    database = postgres_server.dsn(name)
    _run(_create_schema(database))
    return database


@pytest.fixture
def config(dsn):
    return {"messaging_pg_dsn": dsn}


def _message(
    dsn,
    run,
    n,
    *,
    delivered=True,
    dispatched=True,
    parked=False,
    redeliveries=0,
    delivery_delay_s=0.0,
):
    """One message of `run` with its outbox row and (optionally) its delivery."""
    message_id = uuid.uuid4()
    client_msg_id = f"{run}:{n}"
    _run(
        _execute(
            dsn,
            "INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, "
            "size_bytes) VALUES ($1, $2, $3, $4, 4)",
            message_id,
            uuid.uuid4(),
            client_msg_id,
            b"abcd",
        )
    )
    _run(
        _execute(
            dsn,
            "INSERT INTO outbox (message_id, dispatched_at, parked_at) VALUES "
            "($1, CASE WHEN $2 THEN now() END, CASE WHEN $3 THEN now() END)",
            message_id,
            dispatched,
            parked,
        )
    )
    if delivered:
        _deliver(dsn, message_id, redeliveries, delivery_delay_s)
    return message_id, client_msg_id


def _deliver(dsn, message_id, redeliveries=0, delay_s=0.0):
    _run(
        _execute(
            dsn,
            "INSERT INTO deliveries (message_id, stream_id, consumer, delivered_at, "
            "redeliveries) SELECT id, '1-0', 'c1', created_at + make_interval(secs => $3),"
            " $2 FROM messages WHERE id = $1",
            message_id,
            redeliveries,
            float(delay_s),
        )
    )


def _run_id():
    return f"run-{uuid.uuid4().hex[:8]}"


def test_outbox_backlog_parked_and_oldest_undispatched(dsn, config):
    before_backlog = postgres.outbox_backlog(configuration=config)
    before_parked = postgres.outbox_parked(configuration=config)
    run = _run_id()
    _message(dsn, run, 1, delivered=False, dispatched=False)
    _message(dsn, run, 2, delivered=False, dispatched=False, parked=True)
    _message(dsn, run, 3)
    assert postgres.outbox_backlog(configuration=config) == before_backlog + 2
    assert postgres.outbox_parked(configuration=config) == before_parked + 1
    assert postgres.outbox_oldest_undispatched_seconds(configuration=config) >= 0.0
    _run(_execute(dsn, "UPDATE outbox SET dispatched_at = now() WHERE dispatched_at IS NULL"))
    assert postgres.outbox_backlog(configuration=config) == 0
    assert postgres.outbox_parked(configuration=config) == 0
    assert postgres.outbox_oldest_undispatched_seconds(configuration=config) == 0.0


def test_query_scalar_reads_but_never_writes(dsn, config):
    assert postgres.query_scalar("SELECT $1::int + 1", [41], configuration=config) == 42
    assert postgres.query_scalar("SELECT 1 WHERE false", configuration=config) is None
    assert isinstance(postgres.query_scalar("SELECT now()", configuration=config), str)
    assert postgres.query_scalar("SELECT 1.5::numeric", configuration=config) == 1.5
    with pytest.raises(ActivityFailed, match="probes only read"):
        postgres.query_scalar("DELETE FROM deliveries", configuration=config)


def test_unreachable_database_fails_with_the_password_redacted():
    dsn = f"postgresql://app:s3cret@127.0.0.1:{servers.free_port()}/messaging"
    with pytest.raises(ActivityFailed) as failure:
        postgres.outbox_backlog(configuration={"messaging_pg_dsn": dsn})
    message = str(failure.value)
    assert "cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1" in message
    assert "s3cret" not in message and "messaging_pg_dsn" in message


def test_database_without_schema_points_to_the_migrations(postgres_server):
    with pytest.raises(ActivityFailed, match="outbox.*does not exist.*msgstack migrate"):
        postgres.outbox_backlog(dsn=postgres_server.dsn("postgres"))


def test_accounting_reports_a_missing_delivery_as_lost_by_id(dsn, config):
    run = _run_id()
    ids = [_message(dsn, run, n, redeliveries=2 if n == 0 else 0) for n in range(5)]
    _run(_execute(dsn, "DELETE FROM deliveries WHERE message_id = $1", ids[3][0]))
    result = accounting.message_accounting(
        run, settle_timeout=0.3, poll_interval=0.1, configuration=config
    )
    assert result["acknowledged"] == 5 and result["delivered"] == 4
    assert result["lost"] == 1 and result["lost_ids"] == [ids[3][1]]
    assert result["pending"] == 0 and result["parked"] == 0
    assert result["redelivered"] == 1 and result["duplicated"] == 0
    assert result["late"] is None and result["k6_accepted"] is None
    json.dumps(result)  # journals need JSON
    assert result["ok"] is False and "1 of 5 acknowledged messages lost" in result["reason"]


def test_accounting_only_counts_its_own_run(dsn, config):
    run = _run_id()
    _message(dsn, run, 1)
    _message(dsn, f"{run}x", 1, delivered=False)  # another run sharing the prefix text
    result = accounting.message_accounting(run, settle_timeout=0, configuration=config)
    assert result["acknowledged"] == 1 and result["lost"] == 0
    assert result["ok"] is True


def test_accounting_waits_for_in_flight_messages_to_settle(dsn, config):
    run = _run_id()
    _message(dsn, run, 1)
    late_id, _ = _message(dsn, run, 2, delivered=False)
    threading.Timer(1.0, _deliver, args=(dsn, late_id)).start()
    result = accounting.message_accounting(
        run, settle_timeout=10, poll_interval=0.2, configuration=config
    )
    assert result["lost"] == 0 and result["delivered"] == 2
    assert 0.9 <= result["settled_s"] < 5


def test_accounting_splits_lost_into_pending_and_parked_outbox_rows(dsn, config):
    run = _run_id()
    _message(dsn, run, 1, delivered=False, dispatched=False)
    _message(dsn, run, 2, delivered=False, dispatched=False, parked=True)
    _message(dsn, run, 3, delivered=False)  # dispatched, never delivered
    result = accounting.message_accounting(run, settle_timeout=0, max_ids=2, configuration=config)
    assert result["lost"] == 3 and result["pending"] == 2 and result["parked"] == 1
    assert result["lost_ids"] == [f"{run}:1", f"{run}:2"]


def test_accounting_counts_late_deliveries_and_api_acknowledged_missing(dsn, config, tmp_path):
    run = _run_id()
    _message(dsn, run, 1, delivery_delay_s=0.1)
    _message(dsn, run, 2, delivery_delay_s=12)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"metrics": {"messages_accepted": {"count": 5, "rate": 1.0}}}))
    result = accounting.message_accounting(
        run, settle_timeout=0, late_after_s=5, k6_summary_path=str(summary), configuration=config
    )
    assert result["late"] == 1
    assert result["k6_accepted"] == 5 and result["api_acknowledged_missing"] == 3
    assert result["ok"] is False and "3 accepted by the API" in result["reason"]


def test_accounting_of_an_unknown_run_is_empty_not_an_error(config):
    result = accounting.message_accounting("no-such-run", settle_timeout=0, configuration=config)
    assert result["acknowledged"] == 0 and result["lost"] == 0 and result["lost_ids"] == []


def test_accounting_cross_checks_the_stream_for_messages_published_twice(dsn, config, redis_server):
    run = _run_id()
    twice, _ = _message(dsn, run, 1)
    once, _ = _message(dsn, run, 2)
    other, _ = _message(dsn, _run_id(), 1)
    stream = f"acct-{run}"
    client = redis.Redis.from_url(redis_server.url)
    for message_id in (twice, once, twice, other, other):
        client.xadd(stream, {"message_id": str(message_id)})
    client.close()
    checked = dict(config, messaging_redis_url=redis_server.url, messaging_stream=stream)
    result = accounting.message_accounting(
        run, settle_timeout=0, check_stream=True, configuration=checked
    )
    assert result["stream_duplicates"] == 1 and result["lost"] == 0
    # a scan bounded before the second copy cannot see it
    assert (
        accounting.message_accounting(
            run, settle_timeout=0, check_stream=True, stream_scan_max=2, configuration=checked
        )["stream_duplicates"]
        == 0
    )
    assert (
        accounting.message_accounting(run, settle_timeout=0, configuration=config)[
            "stream_duplicates"
        ]
        is None
    )

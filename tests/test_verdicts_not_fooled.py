"""Verdicts that cannot be fooled (issue 8, item 6), against a real private Redis and PostgreSQL:
a missing consumer group or stream is not "recovered", recovery needs the run's messages
accounted for, and accounting says where each lost message was last seen."""

import uuid

import pytest
import redis
from test_probes_postgres import _create_schema, _execute, _message, _run

from chaosmessaging import runs
from chaosmessaging.probes import accounting, marks, recovery
from chaosmessaging.stack import servers


@pytest.fixture(scope="module")
def dsn(postgres_server):
    name = f"unfooled_{uuid.uuid4().hex[:8]}"
    servers.create_database(postgres_server.host, postgres_server.port, name)
    database = postgres_server.dsn(name)
    _run(_create_schema(database))
    return database


@pytest.fixture
def config(dsn, redis_server, tmp_path, monkeypatch):
    """Configuration with unique stream/group names and a fresh run whose method started."""
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    monkeypatch.delenv(runs.ENV, raising=False)
    tag = uuid.uuid4().hex[:8]
    configuration = {
        "messaging_pg_dsn": dsn,
        "messaging_redis_url": redis_server.url,
        "messaging_stream": f"s-{tag}",
        "messaging_group": f"g-{tag}",
    }
    marks.mark("method", configuration=configuration)
    return configuration


@pytest.fixture
def client(redis_server):
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    connection.close()


def _run_prefix() -> str:
    return runs.message_prefix().rstrip("/")  # messages of run R are tagged "R/<label>:"


def test_missing_group_is_not_recovered_and_says_why(config, client):
    client.xadd(config["messaging_stream"], {"message_id": str(uuid.uuid4())})  # no group
    result = recovery.wait_for_recovery(
        since="method", timeout=1, interval=0.2, configuration=config
    )
    assert result["recovered"] is False
    assert f"group '{config['messaging_group']}' is missing" in result["why_not"]
    judged = recovery.recovery_within(30, since="method", configuration=config)
    assert judged["ok"] is False and "missing: nothing is consuming" in judged["reason"]


def test_missing_stream_is_not_recovered(config):
    result = recovery.wait_for_recovery(
        since="method", timeout=0.5, interval=0.2, configuration=config
    )
    assert result["recovered"] is False
    assert f"stream '{config['messaging_stream']}' is missing" in result["why_not"]


def test_recovery_waits_until_the_runs_accepted_messages_are_delivered(config, client, dsn):
    stream, group = config["messaging_stream"], config["messaging_group"]
    client.xgroup_create(stream, group, id="0", mkstream=True)  # empty: zero lag in Redis
    message_id, _ = _message(dsn, f"{_run_prefix()}/load", 1, delivered=False)
    _run(
        _execute(
            dsn,
            "UPDATE messages SET created_at = now() - interval '10 seconds' WHERE id = $1",
            message_id,
        )
    )
    stuck = recovery.wait_for_recovery(
        since="method", max_lag_seconds=2, timeout=1, interval=0.2, configuration=config
    )
    assert stuck["recovered"] is False
    assert stuck["behind"]["unaccounted_messages"] == 1
    assert "1 accepted messages of this run older than 2 s have no delivery" in stuck["why_not"]

    _run(
        _execute(
            dsn,
            "INSERT INTO deliveries (message_id, stream_id, consumer) VALUES ($1, '1-0', 'c1')",
            message_id,
        )
    )
    done = recovery.wait_for_recovery(
        since="method", max_lag_seconds=2, timeout=5, interval=0.2, configuration=config
    )
    assert done["recovered"] is True and done["why_not"] is None
    assert recovery.recovery_within(30, since="method", configuration=config)["ok"] is True


def test_accounting_says_where_each_lost_message_was_last_seen(config, client, dsn):
    stream, group = config["messaging_stream"], config["messaging_group"]
    run = f"run-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, group, id="0", mkstream=True)

    def published(n, *, read):
        message_id, client_msg_id = _message(dsn, run, n, delivered=False)
        entry = client.xadd(stream, {"message_id": str(message_id)})
        if read:
            client.xreadgroup(group, "c1", {stream: ">"}, count=10)  # pending, never acked
        _run(
            _execute(
                dsn, "UPDATE outbox SET stream_id = $2 WHERE message_id = $1", message_id, entry
            )
        )
        return client_msg_id

    _message(dsn, run, 0)  # delivered: not lost
    undispatched = _message(dsn, run, 1, delivered=False, dispatched=False)[1]
    parked = _message(dsn, run, 2, delivered=False, dispatched=False, parked=True)[1]
    dead_id, dead = _message(dsn, run, 3, delivered=False, dispatched=False, parked=True)
    _run(_execute(dsn, "UPDATE outbox SET dead_at = now() WHERE message_id = $1", dead_id))
    pending = published(4, read=True)
    in_stream = published(5, read=False)
    vanished_id, vanished = _message(dsn, run, 6, delivered=False)
    _run(_execute(dsn, "UPDATE outbox SET stream_id = '1-1' WHERE message_id = $1", vanished_id))
    forgotten = _message(dsn, run, 7, delivered=False)[1]  # "dispatched", no stream id at all

    result = accounting.message_accounting(run, settle_timeout=0, configuration=config)
    assert result["ok"] is False and result["lost"] == 7
    assert result["last_seen"] == {
        "undispatched": 1,
        "parked": 1,
        "dead": 1,
        "in_stream": 1,
        "pending": 1,
        "nowhere": 2,
    }
    assert {place: sorted(ids) for place, ids in result["last_seen_ids"].items()} == {
        "undispatched": [undispatched],
        "parked": [parked],
        "dead": [dead],
        "in_stream": [in_stream],
        "pending": [pending],
        "nowhere": sorted([vanished, forgotten]),
    }
    # a dead row is not "still in the outbox"
    assert result["dead"] == 1 and result["pending"] == 2 and result["parked"] == 1
    assert (
        "last seen: 1 undispatched, 1 parked, 1 dead, 1 in stream, 1 pending, 2 nowhere"
        in result["reason"]
    )


def test_kills_reclaimed_fails_while_an_entry_pending_at_a_kill_is_not_reclaimed(
    config, client, dsn
):
    stream, group = config["messaging_stream"], config["messaging_group"]
    client.xgroup_create(stream, group, id="0", mkstream=True)
    message_id, _ = _message(dsn, f"{_run_prefix()}/load", 1, delivered=False)
    entry = client.xadd(stream, {"message_id": str(message_id)})
    client.xreadgroup(group, "killed-consumer", {stream: ">"}, count=10)
    runs.record("kills:random_kills", [{"n": 1, "t_s": 1.0, "moment": "catch-up", "down_s": 2.0}])
    runs.record("seed:random_kills", 7)
    runs.record(
        "pending:random_kills#1",
        [{"id": entry, "consumer": "killed-consumer", "message_id": str(message_id)}],
    )

    stuck = recovery.kills_reclaimed("random_kills", min_kills=1, configuration=config)
    assert stuck["ok"] is False and stuck["seed"] == 7
    assert "kill 1: 1 of 1 entries still pending, 1 undelivered" in stuck["reason"]
    assert stuck["kills"][0]["still_pending"] == [entry]
    assert recovery.kills_reclaimed("random_kills", min_kills=2, configuration=config)[
        "reason"
    ].startswith("only 1 of 2 kills happened")

    client.xack(stream, group, entry)  # reclaimed and recorded by another consumer
    _run(
        _execute(
            dsn,
            "INSERT INTO deliveries (message_id, stream_id, consumer) VALUES ($1, $2, 'c2')",
            message_id,
            entry,
        )
    )
    judged = recovery.kills_reclaimed("random_kills", min_kills=1, configuration=config)
    assert judged["ok"] is True and judged["kills"][0]["reclaimed"] == 1
    assert (
        judged["reason"]
        == "1 kills (seed 7): all 1 entries pending at them reclaimed and delivered"
    )

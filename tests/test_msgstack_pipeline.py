"""The reference pipeline end to end (API -> outbox -> dispatcher -> stream -> consumer -> ledger)
and under faults: Redis down, Redis restarted empty, services restarted, a consumer killed -9.

Zero loss is checked by accounting: every id the API accepted has exactly one deliveries row.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from test_msgstack_api import (
    AUTH,
    TEST_USER,
    Service,
    fresh_env,
    message,
    migrate,
    seed_identity,
    sql,
    start_service,
    wait_until,
)

from chaosmessaging.stack import servers
from msgstack import config, dispatcher


@dataclass
class PrivateRedis:
    """A Redis of the test's own, which it may stop and restart (always empty: no persistence)."""

    port: int
    data: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def start(self) -> None:
        self.proc = servers.start_redis(self.port, self.data)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    r = PrivateRedis(servers.free_port(), tmp_path / "redis", None)  # type: ignore[arg-type]
    r.start()
    yield r
    r.stop()


def post_many(api: Service, count: int, run: str, headers: dict | None = None) -> list[str]:
    """POST `count` messages (8 at a time); return the accepted ids."""

    def one(n: int) -> str:
        with httpx.Client(timeout=10, headers=headers or AUTH) as c:
            answer = c.post(f"{api.url}/v1/messages", json=message(f"{run}:{n}"))
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def delivered_count(env: dict[str, str]) -> int:
    return sql(env["MSGSTACK_PG_DSN"], "SELECT count(*) AS n FROM deliveries")[0]["n"]


def assert_exactly_once(env: dict[str, str], accepted: list[str]) -> None:
    rows = sql(env["MSGSTACK_PG_DSN"], "SELECT message_id FROM deliveries")
    delivered = [str(r["message_id"]) for r in rows]
    missing = set(accepted) - set(delivered)
    assert not missing, (
        f"{len(missing)} accepted messages never delivered, e.g. {sorted(missing)[:3]}"
    )
    assert len(delivered) == len(set(delivered))


def pel_size(redis_url: str, env: dict[str, str]) -> int:
    r = redis.Redis.from_url(redis_url)
    try:
        return r.xpending(env["MSGSTACK_STREAM"], env["MSGSTACK_GROUP"])["pending"]
    finally:
        r.close()


def pending_of(r: redis.Redis, env: dict[str, str], consumer: bytes) -> int:
    owners = {
        c["name"]: c["pending"]
        for c in r.xinfo_consumers(env["MSGSTACK_STREAM"], env["MSGSTACK_GROUP"])
    }
    return owners.get(consumer, 0)


def start_stack(
    env: dict[str, str], log_dir: Path, names=("api", "dispatcher", "consumer"), **extra: str
) -> dict[str, Service]:
    with ThreadPoolExecutor(len(names)) as pool:
        started = pool.map(lambda n: start_service(n, env, log_dir, **extra), names)
    return dict(zip(names, started))


def stop_all(stack: dict[str, Service]) -> None:
    for service in stack.values():
        service.stop()


def assert_no_crash(stack: dict[str, Service]) -> None:
    for service in stack.values():
        assert service.proc.poll() is None, f"{service.name} died:\n{service.log_text()[-3000:]}"
        assert "Traceback" not in service.log_text(), service.log_text()[-3000:]


# --- a shared healthy stack -------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(postgres_server, redis_server) -> dict[str, str]:
    return fresh_env(postgres_server, redis_server.url)


@pytest.fixture(scope="module")
def stack(env, tmp_path_factory) -> Iterator[dict[str, Service]]:
    services = start_stack(env, tmp_path_factory.mktemp("stack"), MSGSTACK_RECLAIM_IDLE_MS="200")
    yield services
    stop_all(services)


def test_accepted_messages_flow_through_the_stream_into_the_ledger(stack, env, redis_server):
    accepted = post_many(stack["api"], 200, "flow")
    wait_until(lambda: delivered_count(env) >= 200, 20, "200 deliveries")
    assert_exactly_once(env, accepted)
    outbox = sql(
        env["MSGSTACK_PG_DSN"],
        "SELECT count(*) AS n FROM outbox WHERE dispatched_at IS NULL OR stream_id IS NULL",
    )
    assert outbox[0]["n"] == 0

    r = redis.Redis.from_url(redis_server.url)
    ((_entry_id, fields),) = r.xrange(env["MSGSTACK_STREAM"], count=1)
    r.close()
    assert set(fields) == {b"message_id", b"conversation_id", b"outbox_id", b"created_at"}
    assert (
        httpx.get(f"{stack['api'].url}/v1/messages/{accepted[0]}", headers=AUTH).json()["delivered"]
        is True
    )

    wait_until(
        lambda: (
            stack["consumer"].metric("messaging_consumer_pel_size") == 0
            and stack["consumer"].metric("messaging_consumer_delivered_total") >= 200
        ),
        5,
        "the consumer metrics to settle",
    )
    assert stack["dispatcher"].metric("messaging_dispatch_published_total") >= 200
    assert stack["dispatcher"].metric("messaging_outbox_dead_total") == 0
    assert stack["dispatcher"].metric("messaging_dispatch_lag_seconds") < 5
    assert pel_size(redis_server.url, env) == 0
    assert_no_crash(stack)


def test_poison_entries_go_to_the_dead_letter_stream_and_are_acknowledged(stack, env, redis_server):
    r = redis.Redis.from_url(redis_server.url)
    garbage = r.xadd(env["MSGSTACK_STREAM"], {"nonsense": "1"})
    unknown = r.xadd(
        env["MSGSTACK_STREAM"],
        {
            "message_id": str(uuid.uuid4()),
            "conversation_id": str(uuid.uuid4()),
            "outbox_id": "0",
            "created_at": "1.0",
        },
    )

    def dead_ids():
        return {fields[b"original_id"] for _, fields in r.xrange(env["MSGSTACK_DEAD_STREAM"])}

    wait_until(lambda: {garbage, unknown} <= dead_ids(), 20, "both poison entries dead-lettered")
    reasons = {f[b"original_id"]: f[b"reason"] for _, f in r.xrange(env["MSGSTACK_DEAD_STREAM"])}
    r.close()
    assert reasons[garbage].startswith(b"unparsable")
    assert reasons[unknown].startswith(b"max_deliveries")
    wait_until(lambda: pel_size(redis_server.url, env) == 0, 5, "an empty PEL")
    consumer = stack["consumer"]
    assert consumer.metric("messaging_consumer_dead_letters_total", reason="unparsable") == 1
    assert consumer.metric("messaging_consumer_dead_letters_total", reason="max_deliveries") == 1


def test_each_service_stops_gracefully_on_sigterm_and_resumes_after_restart(stack, env, tmp_path):
    before = delivered_count(env)
    for name in ("api", "dispatcher", "consumer"):
        took = stack[name].stop(signal.SIGTERM)
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit here.
        assert stack[name].proc.returncode in (0, -signal.SIGTERM)
        assert stack[name].log_text().rstrip().endswith("msgstack.service: stopped")
        assert took < 6, f"{name} took {took:.1f}s to stop"
        stack[name] = start_service(name, env, tmp_path, MSGSTACK_RECLAIM_IDLE_MS="200")
    accepted = post_many(stack["api"], 50, "restart")
    wait_until(lambda: delivered_count(env) >= before + 50, 20, "50 more deliveries")
    assert_exactly_once(env, accepted)
    assert_no_crash(stack)


# --- faults that need a Redis of their own ----------------------------------------------------


def test_redis_outage_parks_rows_degrades_readiness_and_replays_after_recovery(
    postgres_server, private_redis, tmp_path
):
    env = fresh_env(postgres_server, private_redis.url)
    stack = start_stack(env, tmp_path)
    try:
        headers = stack["api"].auth(TEST_USER)
        accepted = post_many(stack["api"], 20, "before", headers)
        wait_until(lambda: delivered_count(env) == 20, 15, "20 deliveries")

        private_redis.stop()
        for service in stack.values():
            ready = httpx.get(f"{service.url}/readyz", timeout=5)
            assert ready.status_code == 503, (service.name, ready.text)
            assert ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["redis"] != "ok"
            assert ready.json()["checks"]["postgres"] == "ok"
        # the API needs PostgreSQL, and Redis only to check tokens it has not seen before
        accepted += post_many(stack["api"], 50, "during", headers)
        dsn = env["MSGSTACK_PG_DSN"]
        wait_until(
            lambda: (
                sql(
                    dsn,
                    "SELECT count(*) AS n FROM outbox WHERE parked_at IS NOT NULL "
                    "AND last_error IS NOT NULL",
                )[0]["n"]
                > 0
            ),
            10,
            "parked rows",
        )
        assert stack["dispatcher"].metric("messaging_dispatch_dlq_total", sink="redis") > 0

        private_redis.start()  # comes back empty: stream and group are gone
        wait_until(lambda: delivered_count(env) == 70, 30, "all 70 deliveries after recovery")
        assert_exactly_once(env, accepted)
        for service in stack.values():
            wait_until(
                lambda s=service: httpx.get(f"{s.url}/readyz").status_code == 200,
                5,
                f"{service.name} ready again",
            )
        assert sql(dsn, "SELECT count(*) AS n FROM outbox WHERE dispatched_at IS NULL")[0]["n"] == 0
        assert stack["dispatcher"].metric("messaging_dispatch_replayed_total") > 0
        assert stack["dispatcher"].metric("messaging_outbox_dead_total") == 0
        assert "parked" in stack["dispatcher"].log_text()
        assert_no_crash(stack)
    finally:
        stop_all(stack)


def test_postgres_restart_is_survived_by_every_service(redis_server, tmp_path):
    port = servers.free_port()
    data = tmp_path / "pg"
    pg = servers.start_postgres(port, data)
    stack: dict[str, Service] = {}
    try:
        servers.create_database("127.0.0.1", port, "restart")
        env = {
            "MSGSTACK_PG_DSN": f"postgresql://postgres@127.0.0.1:{port}/restart",
            "MSGSTACK_REDIS_URL": redis_server.url,
            "MSGSTACK_STREAM": f"pgrestart:{port}",
            "MSGSTACK_GROUP": "g",
            "MSGSTACK_DEAD_STREAM": f"pgrestart:{port}:dead",
        }
        assert migrate(env).returncode == 0
        seed_identity(env)
        stack = start_stack(env, tmp_path)
        accepted = post_many(stack["api"], 30, "before")
        wait_until(lambda: delivered_count(env) == 30, 15, "30 deliveries")

        pg.send_signal(signal.SIGINT)  # fast shutdown: every pooled connection dies
        pg.wait(15)
        wait_until(
            lambda: httpx.get(f"{stack['dispatcher'].url}/readyz").status_code == 503,
            5,
            "the dispatcher to report PostgreSQL down",
        )
        pg = servers.start_postgres(port, data)
        wait_until(
            lambda: (
                httpx.post(
                    f"{stack['api'].url}/v1/messages", json=message(), headers=AUTH
                ).status_code
                == 202
            ),
            15,
            "the API back",
        )
        accepted += post_many(stack["api"], 30, "after")
        wait_until(lambda: delivered_count(env) >= 61, 60, "deliveries after the restart")
        assert_exactly_once(env, accepted)
        assert "postgres reconnected" in stack["dispatcher"].log_text()
        assert_no_crash(stack)
    finally:
        stop_all(stack)
        if pg.poll() is None:
            pg.send_signal(signal.SIGINT)
            pg.wait(15)


def test_redis_restarted_empty_after_dispatch_still_delivers_everything(
    postgres_server, private_redis, tmp_path
):
    env = fresh_env(postgres_server, private_redis.url)
    stack = start_stack(env, tmp_path, names=("api", "dispatcher"))
    try:
        accepted = post_many(stack["api"], 100, "empty")
        dsn = env["MSGSTACK_PG_DSN"]
        wait_until(
            lambda: (
                sql(dsn, "SELECT count(*) AS n FROM outbox WHERE dispatched_at IS NOT NULL")[0]["n"]
                == 100
            ),
            15,
            "100 dispatched rows",
        )
        private_redis.stop()  # the published entries die with it: nothing consumed them yet
        private_redis.start()
        stack["consumer"] = start_service("consumer", env, tmp_path)
        wait_until(
            lambda: delivered_count(env) == 100, 30, "100 deliveries after the empty restart"
        )
        assert_exactly_once(env, accepted)
        assert stack["dispatcher"].metric("messaging_dispatch_redispatched_total") >= 100
        assert_no_crash(stack)
    finally:
        stop_all(stack)


def test_consumer_killed_mid_stream_loses_nothing_and_its_replacement_reclaims_the_pel(
    postgres_server, redis_server, tmp_path
):
    env = fresh_env(postgres_server, redis_server.url)
    env["MSGSTACK_RECLAIM_IDLE_MS"] = "1000"
    stack = start_stack(env, tmp_path, names=("api", "dispatcher"))
    dsn = env["MSGSTACK_PG_DSN"]
    try:
        accepted = post_many(stack["api"], 50, "early")
        wait_until(
            lambda: (
                sql(dsn, "SELECT count(*) AS n FROM outbox WHERE dispatched_at IS NOT NULL")[0]["n"]
                == 50
            ),
            15,
            "50 dispatched rows",
        )
        # A consumer that read 50 entries and died before acknowledging any of them.
        r = redis.Redis.from_url(redis_server.url)
        r.xgroup_create(env["MSGSTACK_STREAM"], env["MSGSTACK_GROUP"], id="0")
        r.xreadgroup(env["MSGSTACK_GROUP"], "ghost", {env["MSGSTACK_STREAM"]: ">"}, count=50)

        first = start_service("consumer", env, tmp_path, MSGSTACK_CONSUMER_NAME="consumer-a")
        with ThreadPoolExecutor(1) as background:
            posting = background.submit(post_many, stack["api"], 450, "stream")
            wait_until(lambda: delivered_count(env) >= 100, 20, "100 deliveries", interval=0.02)
            first.stop(signal.SIGKILL)
            assert not posting.done(), "the kill came too late to be mid-stream"
            left_by_a = pending_of(r, env, b"consumer-a")
            stack["consumer"] = start_service(
                "consumer", env, tmp_path, MSGSTACK_CONSUMER_NAME="consumer-b"
            )
            accepted += posting.result()
        wait_until(lambda: delivered_count(env) == 500, 30, "500 deliveries")
        assert_exactly_once(env, accepted)
        wait_until(lambda: pel_size(redis_server.url, env) == 0, 10, "an empty PEL")
        # The ghost's entries were reclaimed by consumer-a or consumer-b, consumer-a's by b.
        assert pending_of(r, env, b"ghost") == 0 and pending_of(r, env, b"consumer-a") == 0
        assert stack["consumer"].metric("messaging_consumer_pel_reclaimed_total") >= left_by_a
        r.close()
        assert_no_crash(stack)
    finally:
        stop_all(stack)


def test_the_dispatchers_mark_reads_its_batch_by_primary_key_not_by_scanning_the_outbox(
    postgres_server, redis_server
):
    """Every outbox row ever written stays in the table; marking a batch dispatched must cost the
    batch, not the table. Joined to unnest() alone, PostgreSQL scanned the whole outbox at every
    batch while it held up to a few tens of thousands of rows (705 scans, 3.4 M rows read in a
    20 s run at 500/s)."""
    env = fresh_env(postgres_server, redis_server.url)
    dsn = env["MSGSTACK_PG_DSN"]
    conversation = sql(dsn, "SELECT id FROM conversations LIMIT 1")[0]["id"]
    sql(
        dsn,
        """
        WITH m AS (
            INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, size_bytes)
            SELECT gen_random_uuid(), $1, 'plan-' || g, '\\x00'::bytea, 1
            FROM generate_series(1, 10000) g RETURNING id
        )
        INSERT INTO outbox (message_id) SELECT id FROM m
        """,
        conversation,
    )
    sql(dsn, "ANALYZE outbox")
    ids = [r["id"] for r in sql(dsn, "SELECT id FROM outbox ORDER BY id DESC LIMIT 100")]

    def plan(statement: str) -> str:
        async def run() -> str:
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    rows = await conn.fetch(f"EXPLAIN {statement}", ids, ["1-0"] * len(ids))
                    return "\n".join(r[0] for r in rows)
            finally:
                await conn.close()

        return asyncio.run(run())

    assert "Seq Scan on outbox" not in plan(dispatcher.MARK_SQL), plan(dispatcher.MARK_SQL)
    assert "Seq Scan on outbox" not in plan(dispatcher.REDISPATCH_SQL)
    # the form without the primary-key condition is the one that scanned: the test can fail
    unbounded = dispatcher.MARK_SQL.replace(" AND o.id = ANY($1::bigint[])", "")
    assert "Seq Scan on outbox" in plan(unbounded)


def test_the_dispatch_poll_is_a_setting_in_milliseconds_and_a_bad_one_is_refused():
    base = {
        "MSGSTACK_PORT": "8000",
        "MSGSTACK_PG_DSN": "postgresql://postgres@127.0.0.1:1/messaging",
        "MSGSTACK_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    assert config.load("dispatcher", base).dispatch_poll_s == 0.1
    tuned = config.load("dispatcher", {**base, "MSGSTACK_DISPATCH_POLL_MS": "20"})
    assert tuned.dispatch_poll_s == 0.02
    for bad in ("0", "fast"):
        with pytest.raises(config.ConfigError, match="MSGSTACK_DISPATCH_POLL_MS"):
            config.load("dispatcher", {**base, "MSGSTACK_DISPATCH_POLL_MS": bad})

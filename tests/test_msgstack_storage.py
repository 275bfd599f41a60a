"""The reference stack's storage layer (msgstack/storage), its online migrations and seed command,
against private PostgreSQL and Redis servers: real failures, real pools, no mocks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import asyncpg
import pytest
import redis.asyncio as aioredis

from chaosmessaging.stack import servers
from msgstack import db, health, migrate
from msgstack.storage import BreakerOpen, PoolExhausted, Storage, metrics
from msgstack.storage.settings import load as load_settings
from test_msgstack_api import fresh_env, sql

FAST = {
    "MSGSTACK_BREAKER_FAILURES": "3",
    "MSGSTACK_BREAKER_RESET_S": "0.5",
    "MSGSTACK_PG_ACQUIRE_TIMEOUT_S": "0.3",
    "MSGSTACK_STORAGE_BACKOFF_BASE_S": "0.001",
}


def _value(metric, **labels) -> float:
    """The current value of a metric of this process (the `_total` sample of a counter)."""
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                return sample.value
    return 0.0


@pytest.fixture
def env(postgres_server, redis_server):
    return fresh_env(postgres_server, redis_server.url)


async def _storage(env: dict, pool_max: int = 3) -> Storage:
    pool = await db.create_pool(env["MSGSTACK_PG_DSN"], pool_max, 2.0)
    client = aioredis.Redis.from_url(env["MSGSTACK_REDIS_URL"])
    return Storage.create(pool, client, load_settings(FAST))


def test_breaker_opens_after_consecutive_failures_refuses_fast_and_closes_after_reset(env):
    async def go():
        storage = await _storage(env)
        dead = servers.free_port()
        guard = storage.stream.guard

        async def unreachable():
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", dead), 1)

        opened = _value(metrics.TRANSITIONS, adapter="stream", state="open")
        for _ in range(3):
            with pytest.raises(OSError):
                await guard.call(unreachable, retry=False)
        assert guard.state == "open"
        started = time.perf_counter()
        with pytest.raises(BreakerOpen):
            await guard.call(unreachable)
        assert time.perf_counter() - started < 0.05, "an open breaker must refuse at once"
        assert _value(metrics.TRANSITIONS, adapter="stream", state="open") == opened + 1
        await asyncio.sleep(0.6)  # the reset time: the next call is the half-open trial
        assert await storage.stream.publish("storage-test", {"k": "v"})
        assert guard.state == "closed"
        assert _value(metrics.BREAKER_STATE, adapter="stream") == 0
        await storage.postgres.pool.close()
        await storage.stream.client.aclose()

    asyncio.run(go())


def test_application_errors_do_not_trip_the_breaker_and_connection_errors_are_retried(env):
    async def go():
        storage = await _storage(env)
        for _ in range(5):  # more than the failure threshold
            with pytest.raises(asyncpg.UndefinedColumnError):
                await storage.postgres.run(lambda c: c.fetchval("SELECT nope FROM messages"))
        assert storage.postgres.guard.state == "closed"
        tries = []
        retries = _value(metrics.RETRIES, adapter="postgres")

        async def flaky(conn):
            tries.append(1)
            if len(tries) < 3:
                raise ConnectionResetError("connection died under the work")
            return await conn.fetchval("SELECT 1")

        assert await storage.postgres.run(flaky) == 1
        assert len(tries) == 3
        assert _value(metrics.RETRIES, adapter="postgres") == retries + 2
        await storage.postgres.pool.close()
        await storage.stream.client.aclose()

    asyncio.run(go())


def test_exhausted_pool_times_out_counts_waiters_and_errors_release_connections(env):
    async def go():
        storage = await _storage(env, pool_max=2)
        pg = storage.postgres
        release = asyncio.Event()

        async def hold(conn):
            await release.wait()

        holders = [asyncio.create_task(pg.run(hold)) for _ in range(2)]
        await asyncio.sleep(0.1)
        waiter = asyncio.create_task(pg.run(lambda c: c.fetchval("SELECT 1")))
        await asyncio.sleep(0.1)
        assert _value(metrics.POOL_IN_USE) == 2 and _value(metrics.POOL_WAITING) == 1
        timeouts = _value(metrics.ERRORS, adapter="postgres", type="TimeoutError")
        with pytest.raises(PoolExhausted):
            await waiter
        assert _value(metrics.ERRORS, adapter="postgres", type="TimeoutError") == timeouts + 1
        release.set()
        await asyncio.gather(*holders)
        for _ in range(4):  # failing work gives its connection back every time
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await pg.run(lambda c: c.execute("SELEC 1"))
        assert _value(metrics.POOL_IN_USE) == 0 and _value(metrics.POOL_WAITING) == 0
        await pg.pool.close()
        await storage.stream.client.aclose()

    asyncio.run(go())


def _msgstack(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "msgstack", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readiness_pings_are_no_breaker_samples_and_key_commands_share_the_cache_breaker(env):
    """The one road's two additions: `ping` (for /readyz) uses the adapter's pool or client but
    neither resets the count of consecutive failures nor is refused by an open breaker; key and
    pub/sub commands (`cache.run`, `cache.subscription`) go through the cache adapter."""

    async def go():
        storage = await _storage(env)
        guard = storage.stream.guard
        dead = servers.free_port()

        async def unreachable():
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", dead), 1)

        for _ in range(2):  # one short of the threshold (3)
            with pytest.raises(OSError):
                await guard.call(unreachable, retry=False)
        await storage.stream.ping()  # Redis answers, but this is no sample of the work
        await storage.postgres.ping()
        assert _value(metrics.POOL_IN_USE) == 0, "the readiness connection went back"
        with pytest.raises(OSError):
            await guard.call(unreachable, retry=False)
        assert guard.state == "open", "a ping reset the count of consecutive failures"
        assert await health.check_redis(storage.stream) == "ok", "readiness asks Redis itself"
        assert await health.check_postgres(storage.postgres) == "ok"

        subscription = storage.cache.subscription()
        await subscription.subscribe("storage-test-channel")
        assert (await subscription.get_message(timeout=1))["type"] == "subscribe"
        told = await storage.cache.run(lambda r: r.publish("storage-test-channel", "hello"))
        assert told == 1
        message = await subscription.get_message(timeout=1)
        assert message["type"] == "message" and message["data"] == b"hello"
        await subscription.aclose()
        await storage.cache.run(lambda r: r.set("storage-test-key", "v", ex=5))
        assert await storage.cache.run(lambda r: r.get("storage-test-key")) == b"v"
        assert storage.cache.guard.state == "closed"
        await storage.postgres.pool.close()
        await storage.stream.client.aclose()

    asyncio.run(go())


def test_online_migration_is_not_applied_by_migrate_but_runs_by_name_again_and_again(env):
    dsn = env["MSGSTACK_PG_DSN"]
    assert not sql(
        dsn, "SELECT 1 FROM pg_indexes WHERE indexname = $1", "messages_retention_size_idx"
    )
    for _ in range(2):  # re-runnable: each run rebuilds the index
        done = _msgstack(env, "migrate", "--name", "0010_messages_retention_index")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["seconds"] >= 0
    assert sql(dsn, "SELECT 1 FROM pg_indexes WHERE indexname = $1", "messages_retention_size_idx")
    assert sql(
        dsn,
        "SELECT version FROM schema_migrations WHERE version = $1",
        "0010_messages_retention_index",
    )
    unknown = _msgstack(env, "migrate", "--name", "9999_nothing")
    assert unknown.returncode == 1 and "known:" in unknown.stderr


def test_do_blocks_stay_one_statement():
    statements = migrate.resolve("0010_messages_retention_index").statements()
    assert len(statements) == 4
    assert statements[0].startswith("-- msgstack: no-transaction") and "DO $$" in statements[0]
    assert statements[0].endswith("$$;")
    assert statements[3].startswith("CREATE INDEX CONCURRENTLY")


def test_seed_grows_the_table_to_a_target_count_once(env):
    first = _msgstack(env, "seed-messages", "--rows", "5000")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.splitlines()[-1]) == {"rows": 5000, "added": 5000}
    again = _msgstack(env, "seed-messages", "--rows", "5000")
    assert json.loads(again.stdout.splitlines()[-1])["added"] == 0
    count = sql(
        env["MSGSTACK_PG_DSN"],
        "SELECT count(*) FROM messages m WHERE client_msg_id "
        "LIKE 'seed:%' AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id)",
    )
    assert count[0][0] == 5000

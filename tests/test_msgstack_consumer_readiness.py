"""The consumer's /readyz reflects progress, not only that Redis answers PING.

Sabotage: a transaction holds an exclusive lock on the deliveries ledger, so the consumer reads
entries but can record (and so acknowledge) none; PostgreSQL and Redis both still answer. Within
MSGSTACK_STALL_SECONDS of the backlog forming, /readyz must answer 503 with a "progress" check
saying so; once the lock goes, the backlog drains and /readyz answers 200 again.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import asyncpg
import httpx
import pytest
import redis
from test_msgstack_api import fresh_env, sql, start_service, wait_until

from msgstack import streams

STALL_SECONDS = 2


def _readyz(service) -> tuple[int, dict]:
    answer = httpx.get(f"{service.url}/readyz", timeout=5)
    return answer.status_code, answer.json()


def _add_entries(env: dict[str, str], count: int) -> list[str]:
    """Messages as the API would store them, and their stream entries as the dispatcher would."""
    ids = [uuid.uuid4() for _ in range(count)]
    for message_id in ids:
        sql(
            env["MSGSTACK_PG_DSN"],
            "INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, size_bytes) "
            "VALUES ($1, $2, $3, $4, 4)",
            message_id,
            uuid.uuid4(),
            f"readiness-{message_id}",
            b"data",
        )
    client = redis.Redis.from_url(env["MSGSTACK_REDIS_URL"])
    for n, message_id in enumerate(ids):
        client.xadd(
            env["MSGSTACK_STREAM"], streams.encode(message_id, uuid.uuid4(), n, time.time())
        )
    client.close()
    return [str(i) for i in ids]


class LedgerLock:
    """Holds ACCESS EXCLUSIVE on `deliveries` in an open transaction until released."""

    def __init__(self, dsn: str) -> None:
        self.dsn, self.locked, self.release = dsn, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
                self.locked.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()

    def __enter__(self) -> LedgerLock:
        self.thread.start()
        assert self.locked.wait(10), "could not lock the deliveries table"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.thread.join(10)


@pytest.fixture
def consumer(postgres_server, redis_server, tmp_path):
    env = fresh_env(postgres_server, redis_server.url)
    service = start_service("consumer", env, tmp_path, MSGSTACK_STALL_SECONDS=str(STALL_SECONDS))
    yield service, env
    service.stop()


def test_consumer_that_stops_making_progress_is_not_ready(consumer):
    service, env = consumer
    wait_until(lambda: _readyz(service)[0] == 200, 20, "an idle consumer to be ready")
    time.sleep(STALL_SECONDS + 0.5)
    status, body = _readyz(service)
    assert status == 200 and body["checks"]["progress"] == "ok", body  # idle is not stalled

    with LedgerLock(env["MSGSTACK_PG_DSN"]):
        accepted = _add_entries(env, 5)
        status, body = wait_until(
            lambda: (r := _readyz(service))[0] == 503 and r,
            3 * STALL_SECONDS + 10,
            "/readyz to report the stalled consumer",
        )
        checks = body["checks"]
        assert checks["postgres"] == "ok" and checks["redis"] == "ok", checks
        assert checks["progress"].startswith("stalled:"), checks
        assert "MSGSTACK_STALL_SECONDS=2" in checks["progress"]

    wait_until(lambda: _readyz(service)[0] == 200, 30, "the consumer to be ready again")
    delivered = {
        str(r["message_id"])
        for r in sql(env["MSGSTACK_PG_DSN"], "SELECT message_id FROM deliveries")
    }
    assert set(accepted) <= delivered

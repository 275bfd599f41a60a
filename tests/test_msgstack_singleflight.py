"""Cache misses that come together share one load (msgstack/singleflight.py), on the real API.

A burst of requests on open connections, all at once, against a real API (two uvicorn workers),
real Redis and PostgreSQL: how often Redis was asked about the token is read from Redis itself
(`INFO commandstats`: a token check is the API's only PTTL), how often PostgreSQL was asked
for participants from the API's counters (misses minus the misses that shared a load).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from test_msgstack_api import Service, fresh_env, start_service
from test_msgstack_conversations import User, create

BURST = 120
WORKERS = 2


@pytest.fixture(scope="module")
def env(postgres_server, redis_server) -> dict[str, str]:
    return fresh_env(postgres_server, redis_server.url)


def _api(env, tmp_path_factory, cache_ms: str) -> Iterator[Service]:
    service = start_service(
        "api",
        env,
        tmp_path_factory.mktemp(f"sf-api-{cache_ms}"),
        MSGSTACK_AUTH_TOKEN_CACHE_MS=cache_ms,
        MSGSTACK_PARTICIPANT_CHANNEL=f"sf-{uuid.uuid4().hex[:8]}",
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def api(env, tmp_path_factory) -> Iterator[Service]:
    yield from _api(env, tmp_path_factory, "1000")


@pytest.fixture(scope="module")
def api_without_cache(env, tmp_path_factory) -> Iterator[Service]:
    yield from _api(env, tmp_path_factory, "0")


def _pttl_calls(env: dict[str, str]) -> int:
    client = redis.Redis.from_url(env["MSGSTACK_REDIS_URL"])
    try:
        return int(client.info("commandstats").get("cmdstat_pttl", {}).get("calls", 0))
    finally:
        client.close()


def burst(api: Service, requests: list[tuple[User, str]]) -> list[tuple[int, dict[str, str]]]:
    """Open one connection per request, then write every request (GET `path` as `user`) in one
    go, so they reach the workers together; (status, headers) of each, in order.

    Raw HTTP/1.1 on asyncio streams: an HTTP client library spreads 120 requests over seconds."""

    async def one(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        await reader.readexactly(int(headers.get("content-length", "0")))
        return int(head[0].split()[1]), headers

    async def run() -> list[tuple[int, dict[str, str]]]:
        conns = [await asyncio.open_connection("127.0.0.1", api.port) for _ in requests]
        try:
            for (_, writer), (user, path) in zip(conns, requests, strict=True):
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: {user.headers['Authorization']}\r\n\r\n".encode()
                )
            return await asyncio.wait_for(asyncio.gather(*(one(r) for r, _ in conns)), 30)
        finally:
            for _, writer in conns:
                writer.close()

    return asyncio.run(run())


def test_a_burst_with_a_cold_token_asks_redis_once_per_worker(env, api):
    alice = User(env, "alice")
    conv = create(api, alice)  # its token is checked here: the burst comes after the bound
    path = f"/v1/conversations/{conv['id']}/participants"
    time.sleep(1.2)  # older than the 1 s bound in both workers
    before = _pttl_calls(env)
    answers = burst(api, [(alice, path)] * BURST)
    assert [status for status, _ in answers] == [200] * BURST
    checks = _pttl_calls(env) - before
    shared = api.metric("messaging_loads_shared_total", what="token")
    print(f"{BURST} requests at once: {checks} token checks against Redis, {shared:.0f} shared")
    assert 1 <= checks <= WORKERS, checks
    # the others joined a check in flight, or came after it and found the cache fresh: how many
    # of each depends on how fast the machine parses the burst (92 joined of 118 on a busy CI run)
    assert 1 <= shared <= BURST - checks, shared


def test_without_a_token_cache_every_request_asks_redis(env, api_without_cache):
    alice = User(env, "alice")
    conv = create(api_without_cache, alice)
    path = f"/v1/conversations/{conv['id']}/participants"
    before = _pttl_calls(env)
    answers = burst(api_without_cache, [(alice, path)] * BURST)
    assert [status for status, _ in answers] == [200] * BURST
    assert _pttl_calls(env) - before == BURST
    assert api_without_cache.metric("messaging_loads_shared_total", what="token") == 0


def test_a_burst_on_a_cold_conversation_loads_its_participants_once_per_worker(env, api):
    alice = User(env, "alice")
    conv = create(api, alice)  # a creation stores nothing in the cache: the burst finds it cold
    path = f"/v1/conversations/{conv['id']}/participants"
    misses = api.metric("messaging_participant_cache_misses_total")
    shared = api.metric("messaging_loads_shared_total", what="participants")
    answers = burst(api, [(alice, path)] * BURST)
    assert [status for status, _ in answers] == [200] * BURST
    missed = api.metric("messaging_participant_cache_misses_total") - misses
    joined = api.metric("messaging_loads_shared_total", what="participants") - shared
    loads = missed - joined
    print(f"{BURST} requests at once: {missed:.0f} cache misses, {loads:.0f} loads")
    assert [headers["x-participant-cache"] for _, headers in answers].count("miss") == missed
    assert 1 <= loads <= WORKERS, (missed, joined)


def test_a_load_made_by_a_non_participant_is_never_shared_with_a_participant(env, api):
    """The first request of each burst is an outsider's, who sees no participant under row-level
    security: the participants behind it must still be let in, and the outsider kept out."""
    alice, outsider = User(env, "alice"), User(env, "outsider")
    for _ in range(5):
        conv = create(api, alice)
        path = f"/v1/conversations/{conv['id']}/participants"
        answers = burst(api, [(outsider, path)] * 2 + [(alice, path)] * 40)
        assert [status for status, _ in answers[:2]] == [403] * 2
        assert [status for status, _ in answers[2:]] == [200] * 40

"""The WebSocket gateway's contract against a real stack (private gateway processes with short
heartbeats and a tiny send queue, on the session's embedded stack): tokens are checked before the
upgrade (401), malformed client frames close with 1003 and the gateway keeps serving, an idle
client that does not answer pings is terminated and counted, a slow client is closed with 1013
and counted (never a silent drop: its peers still get every frame), and resume returns exactly
what a device missed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chaosmessaging.clients.prometheus import scrape, select
from chaosmessaging.clients.platform import login
from chaosmessaging.config import DEFAULT_LOADTEST_PASSWORD
from chaosmessaging.stack import servers
from msgstack import streams

pytestmark = pytest.mark.slow


class Gateway:
    def __init__(self, base: str, stack) -> None:
        self.base = base
        self.ws = base.replace("http://", "ws://") + "/v1/ws"
        self.auth = stack.services["auth"].address
        self.api = stack.services["api"].address

    def metric(self, name: str, labels: dict | None = None) -> float:
        return select(scrape(self.base + "/metrics", 5.0), name, labels or {}) or 0.0


@contextmanager
def _private_gateway(stack, log: Path, **settings: str) -> Iterator[Gateway]:
    """A gateway process on `stack` with `settings` over its own, stopped on the way out (even
    when the body fails), its log then checked for a traceback."""
    port = servers.free_port()
    env = {**os.environ, **stack.services["gateway"].env, "MSGSTACK_PORT": str(port), **settings}
    env.pop("MSGSTACK_MUTANT", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "msgstack", "gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"private gateway not ready: {Path(log).read_text()[-2000:]}")
    try:
        yield Gateway(base, stack)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in Path(log).read_text(), Path(log).read_text()[-3000:]


@pytest.fixture(scope="module")
def gateway(embedded_stack, tmp_path_factory):
    """A private gateway on the embedded stack: pings every 0.2 s (0.3 s timeout), queue of 3."""
    with _private_gateway(
        embedded_stack,
        tmp_path_factory.mktemp("gateway") / "gateway.log",
        MSGSTACK_WS_PING_INTERVAL_MS="200",
        MSGSTACK_WS_PING_TIMEOUT_MS="300",
        MSGSTACK_WS_SEND_QUEUE="3",
    ) as gw:
        yield gw


def _session(gw: Gateway, n: int) -> dict:
    return login(gw.auth, f"loadtest-{n}", DEFAULT_LOADTEST_PASSWORD)


def _conversation(gw: Gateway, owner: dict, *others: dict) -> str:
    r = httpx.post(
        f"{gw.api}/v1/conversations",
        timeout=10,
        json={"participants": [o["user_id"] for o in others]},
        headers={"Authorization": f"Bearer {owner['token']}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _post(gw: Gateway, who: dict, conversation: str, size: int = 1024, tag: str = "t") -> str:
    r = httpx.post(
        f"{gw.api}/v1/messages",
        timeout=10,
        headers={"Authorization": f"Bearer {who['token']}"},
        json={
            "conversation_id": conversation,
            "client_msg_id": f"gwtest-{tag}-{time.time_ns()}",
            "ciphertext": base64.b64encode(os.urandom(size)).decode(),
        },
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _eventually(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.2)
    return check()


def _headers(session: dict) -> dict:
    return {"Authorization": f"Bearer {session['token']}"}


async def _frames(ws, count: int, timeout: float = 10.0) -> list[dict]:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            doc = json.loads(await ws.recv())
            if doc["type"] == "message":
                out.append(doc)
    return out


def test_tokens_are_checked_before_the_upgrade(gateway):
    before = {
        r: gateway.metric("ws_auth_refused_total", {"reason": r}) for r in ("missing", "invalid")
    }

    async def attempt(headers: dict, url: str = gateway.ws) -> int:
        try:
            async with connect(url, additional_headers=headers, open_timeout=5):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt({})) == 401
    assert asyncio.run(attempt({"Authorization": "Bearer " + "x" * 43})) == 401
    assert asyncio.run(attempt({"Authorization": "Basic abc"})) == 401
    good = _headers(_session(gateway, 0))
    assert asyncio.run(attempt(good, gateway.ws + "?after=yesterday")) == 400
    assert asyncio.run(attempt(good)) == 101
    r = httpx.get(gateway.base + "/v1/ws", timeout=5)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert gateway.metric("ws_auth_refused_total", {"reason": "missing"}) >= before["missing"] + 3
    assert gateway.metric("ws_auth_refused_total", {"reason": "invalid"}) == before["invalid"] + 1


def test_malformed_client_frames_close_1003_and_the_gateway_keeps_serving(gateway):
    session = _session(gateway, 0)
    before = gateway.metric("ws_malformed_frames_total")

    async def send(frame) -> int:
        async with connect(gateway.ws, additional_headers=_headers(session)) as ws:
            await ws.send(frame)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            return ws.protocol.close_rcvd.code

    assert asyncio.run(send("not json")) == 1003
    assert asyncio.run(send(b"\x00\x01binary")) == 1003
    assert asyncio.run(send(json.dumps({"type": "subscribe-to-everything"}))) == 1003

    async def ping() -> dict:
        async with connect(gateway.ws, additional_headers=_headers(session)) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            assert json.loads(await ws.recv())["type"] == "caught_up"  # nothing owed: fresh
            await ws.send(json.dumps({"type": "ping"}))
            return json.loads(await ws.recv())

    assert asyncio.run(ping()) == {"type": "pong"}  # still serving
    assert gateway.metric("ws_malformed_frames_total") == before + 3
    assert gateway.metric("ws_close_total", {"code": "1003"}) >= 3


def _raw_upgrade(gw: Gateway, token: str, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket handshake by hand, then a client that never reads or answers anything."""
    host, port = gw.base.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_an_idle_client_that_misses_heartbeats_is_terminated_and_counted(gateway):
    before = gateway.metric("ws_heartbeat_terminate_total")
    sock = _raw_upgrade(gateway, _session(gateway, 1)["token"])
    try:
        assert _eventually(lambda: gateway.metric("ws_heartbeat_terminate_total") > before)
        assert gateway.metric("ws_heartbeat_terminate_total") == before + 1
        assert _eventually(lambda: gateway.metric("ws_close_total", {"code": "1011"}) >= 1)
    finally:
        sock.close()


def test_a_slow_client_is_closed_1013_and_its_peer_still_gets_every_frame(gateway):
    slow_user, peer = _session(gateway, 2), _session(gateway, 3)
    conversation = _conversation(gateway, peer, slow_user)
    before = gateway.metric("ws_overload_total")
    count = 120

    async def run() -> list[dict]:
        async with connect(
            gateway.ws, additional_headers=_headers(peer), max_size=2**22, max_queue=None
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            sock = _raw_upgrade(gateway, slow_user["token"], rcvbuf=4096)
            try:
                await asyncio.to_thread(
                    lambda: [
                        _post(gateway, peer, conversation, 65536, f"slow{i}") for i in range(count)
                    ]
                )
                return await _frames(ws, count, timeout=60)
            finally:
                sock.close()

    frames = asyncio.run(run())
    assert len({f["message_id"] for f in frames}) == count
    assert _eventually(lambda: gateway.metric("ws_overload_total") > before)
    assert gateway.metric("ws_overload_total") == before + 1
    assert _eventually(lambda: gateway.metric("ws_close_total", {"code": "1013"}) >= 1)


def test_resume_after_a_seq_returns_exactly_what_was_missed(gateway):
    alice, bob = _session(gateway, 4), _session(gateway, 5)
    conversation = _conversation(gateway, alice, bob)

    async def run() -> tuple[list[dict], list[str], list[dict]]:
        async with connect(gateway.ws, additional_headers=_headers(bob)) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            seen_ids = [
                await asyncio.to_thread(_post, gateway, alice, conversation) for _ in range(3)
            ]
            seen = await _frames(ws, 3)
        missed = [await asyncio.to_thread(_post, gateway, alice, conversation) for _ in range(4)]
        await asyncio.sleep(0.5)  # published to the stream while bob is away
        url = f"{gateway.ws}?after={seen[-1]['seq']}"
        async with connect(url, additional_headers=_headers(bob)) as ws:
            hello = json.loads(await ws.recv())
            assert hello["resumed_from"] == seen[-1]["seq"]
            resumed = await _frames(ws, 4)
            with pytest.raises(TimeoutError):  # nothing more: no repeat of what bob saw
                await _frames(ws, 1, timeout=1.0)
        assert [f["message_id"] for f in seen] == seen_ids
        return seen, missed, resumed

    seen, missed, resumed = asyncio.run(run())
    assert [f["message_id"] for f in resumed] == missed
    assert all(f["conversation_id"] == conversation for f in resumed)
    assert [f["seq"] for f in resumed] == sorted(f["seq"] for f in resumed)


def test_with_no_socket_connected_the_gateway_follows_the_stream_without_reading_rows(gateway):
    """Nobody connected: the gateway moves past new entries without its PostgreSQL query (the
    message rows), yet a device that then resumes gets every one of them, once, in order."""
    alice, bob = _session(gateway, 6), _session(gateway, 7)
    conversation = _conversation(gateway, alice, bob)
    rows = {"adapter": "postgres"}

    async def run() -> tuple[dict, list[dict], list[str], float, float]:
        async with connect(gateway.ws, additional_headers=_headers(bob)) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await asyncio.to_thread(_post, gateway, alice, conversation)
            last_seen = (await _frames(ws, 1))[0]
        await asyncio.sleep(0.3)  # the socket is gone from the gateway's books
        unwatched = gateway.metric("ws_stream_entries_unwatched_total")
        reads = gateway.metric("storage_operation_seconds_count", rows)
        missed = [await asyncio.to_thread(_post, gateway, alice, conversation) for _ in range(5)]
        assert await asyncio.to_thread(
            _eventually,
            lambda: gateway.metric("ws_stream_entries_unwatched_total") >= unwatched + 5,
        ), "the gateway did not pass the new entries while nobody was connected"
        reads_while_alone = gateway.metric("storage_operation_seconds_count", rows) - reads
        url = f"{gateway.ws}?after={last_seen['seq']}"
        async with connect(url, additional_headers=_headers(bob)) as ws:
            hello = json.loads(await ws.recv())
            resumed = await _frames(ws, 5)
            with pytest.raises(TimeoutError):  # no repeat: the live path skipped them
                await _frames(ws, 1, timeout=1.0)
        return hello, resumed, missed, reads_while_alone, unwatched

    hello, resumed, missed, reads_while_alone, _ = asyncio.run(run())
    assert reads_while_alone == 0
    assert [f["message_id"] for f in resumed] == missed
    # the gateway had moved past them before bob came back: they came from the stream (resume)
    assert all(_seq(f["seq"]) <= _seq(hello["cursor"]) for f in resumed)


def _seq(seq: str) -> tuple[int, int]:
    ms, n = seq.split("-")
    return int(ms), int(n)


def test_a_burst_larger_than_the_queue_in_one_batch_reaches_a_client_that_reads(
    embedded_stack, tmp_path
):
    """Twelve entries land in the stream at once (one MULTI, so one read batch) for a socket
    whose queue holds 3: the client never had a chance to drain, so it is not slow; it gets all
    twelve, in order, and stays open. (The gateway reads a private stream the test writes.)"""
    stream = f"gwburst-{uuid.uuid4().hex[:8]}"
    settings = {"MSGSTACK_STREAM": stream, "MSGSTACK_WS_SEND_QUEUE": "3"}
    with _private_gateway(embedded_stack, tmp_path / "gateway.log", **settings) as gw:
        alice, bob = _session(gw, 10), _session(gw, 11)
        conversation = _conversation(gw, alice, bob)
        posted = [_post(gw, alice, conversation, 4096, f"burst{i}") for i in range(12)]
        r = redis.Redis.from_url(embedded_stack.services["gateway"].env["MSGSTACK_REDIS_URL"])

        async def run() -> tuple[list[dict], str]:
            async with connect(gw.ws, additional_headers=_headers(bob)) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
                with r.pipeline(transaction=True) as pipe:
                    for n, message_id in enumerate(posted):
                        pipe.xadd(stream, streams.encode(message_id, conversation, n, time.time()))
                    pipe.execute()
                frames = await _frames(ws, len(posted))
                await ws.send(json.dumps({"type": "ping"}))
                return frames, json.loads(await ws.recv())["type"]

        try:
            before = gw.metric("ws_overload_total")
            frames, answer = asyncio.run(run())
            assert [f["message_id"] for f in frames] == posted
            assert answer == "pong"  # still open after the burst
            assert gw.metric("ws_overload_total") == before
        finally:
            r.delete(stream)
            r.close()

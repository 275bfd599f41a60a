"""The WebSocket gateway: every message of a user's conversations, on each of its connected devices.

``python -m msgstack gateway`` serves, on MSGSTACK_PORT, ``GET /v1/ws`` (the WebSocket) beside the
usual ``/healthz``, ``/readyz`` and ``/metrics``.

Protocol (docs/reference-stack.md, "WebSocket gateway"):

- Connect with ``Authorization: Bearer <token>`` (the auth service's token). A missing, malformed,
  unknown or expired token is refused *before the upgrade* with HTTP 401 and JSON
  ``{"error": "unauthorized", ...}`` (``ws_auth_refused_total{reason}``); 503 while Redis cannot
  check it. ``?after=<seq>`` resumes after the last frame the client saw (400 if malformed).
- The server first sends ``{"type": "hello", "user_id", "cursor", "resumed_from"}``, then one text
  frame per message: ``{"type": "message", "seq", "message_id", "conversation_id",
  "client_msg_id", "accepted_at" (epoch s, when the API accepted it), "ciphertext" (base64)}``.
  ``seq`` is the message's Redis stream entry id: frames come in ``seq`` order. After the frames
  a resume owed (none on a fresh connection) comes ``{"type": "caught_up", "seq"}``: everything
  up to ``seq`` was sent, live frames follow.
- Client frames: ``{"type": "ping"}`` (answered ``{"type": "pong"}``) only. Anything else (binary,
  not JSON, unknown type) closes the socket with 1003 (``ws_malformed_frames_total``); the gateway
  never crashes on it.
- Heartbeats: the server sends WebSocket pings every MSGSTACK_WS_PING_INTERVAL seconds; a client
  that does not answer within MSGSTACK_WS_PING_TIMEOUT is terminated (close 1011, counted in
  ``ws_heartbeat_terminate_total``).
- Each connection has a bounded send queue (MSGSTACK_WS_SEND_QUEUE frames). A client too slow to
  drain it is closed with 1013 "send queue full" and ``ws_overload_total`` grows: a frame is never
  dropped silently; the client reconnects with ``after`` and gets what it missed. "Too slow" means
  the queue still held its limit when the next stream batch came: one batch (up to READ_BATCH
  frames, e.g. the dispatcher's backlog after an outage) is taken whole, because a client that
  never had a chance to drain is not slow. A socket so holds at most the limit plus one batch.
- Shutdown (SIGTERM) closes every socket with 1001 (going away).

How messages reach the gateway, and why: the gateway reads the **Redis stream** the dispatcher
writes (plain XREAD from its own position, not a consumer group: every gateway process must see
every entry, whereas a group would split them between gateways and its acknowledgements would
mean nothing for a socket). The stream is the durable source resume needs: a client that
reconnects with the ``seq`` of the last frame it saw gets XRANGE (seq, now] filtered to its
conversations, then the live frames, with neither gap nor repeat; so a gateway restart, an
overload close or a network cut loses nothing. Pub/Sub would be fire-and-forget and could not
replay a missed second. The entry names the message only; the ciphertext, client message id and
the conversation's participants *at delivery time* come from PostgreSQL in one query per batch, as
the ``msgstack_gateway`` role (reads messages and participants, nothing else; migration 0010);
while no socket is connected the gateway only follows the stream, without that query.
Both go through the storage adapters (msgstack.storage), like every service's PostgreSQL and Redis
work; the Redis reads keep the bound the client's socket timeout gave them.

Built on the ``websockets`` library (protocol, keepalive pings, write-buffer limits, handshake
hooks) rather than ASGI: ASGI exposes no ping/pong, so terminations for missed heartbeats could
not be counted, and a refused handshake could only be a 403. Compression (permessage-deflate) is
off: ciphertext does not compress, and a deflate context per socket would cost ~40 KiB and a
compression pass per frame per socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import signal
import time
import uuid
import weakref
from collections import OrderedDict, deque
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from msgstack import db, gctune, health, metrics, mutants, storage, streams, tokens
from msgstack.config import Settings

__all__ = ["Gateway", "run"]

log = logging.getLogger("msgstack.gateway")

WS_PATH = "/v1/ws"
READ_BATCH = 500
READ_BLOCK_MS = 1000
READ_TIMEOUT = READ_BLOCK_MS / 1000 + streams.SOCKET_TIMEOUT
CATCH_UP_CHUNK = 500
RESUME_CONCURRENCY = 4
_MUTANT_KEPT: list = []  # what gateway_keeps_sent_frames holds on to (selfcheck only)
RECENT_IDS = 200_000  # message ids already fanned out (re-dispatched duplicates are skipped)
RETRY_DELAY = 0.5
_SEQ = re.compile(r"^\d{1,20}-\d{1,20}$")

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003  # malformed client frame
CLOSE_HEARTBEAT = 1011  # websockets' code for "keepalive ping timeout"
CLOSE_OVERLOAD = 1013  # try again later: the send queue was full

ROWS_SQL = """
SELECT m.id, m.conversation_id, m.client_msg_id, m.ciphertext,
       coalesce((SELECT array_agg(p.user_id) FROM participants p
                 WHERE p.conversation_id = m.conversation_id), '{}') AS members
FROM messages m
WHERE m.id = ANY($1::uuid[])
"""


MINE_SQL = "SELECT conversation_id FROM participants WHERE user_id = $1"


class Conn:
    """One accepted socket: its user, its bounded queue of pre-serialized frames, its state.

    The sender task exists only while frames wait (an idle socket costs no task of its own)."""

    __slots__ = (
        "ws",
        "user",
        "pending",
        "limit",
        "live",
        "overloaded",
        "closing",
        "sent",
        "sender",
        "subscribed",
        "batch",
        "carried",
    )

    def __init__(self, ws: ServerConnection, user: uuid.UUID, queue_size: int) -> None:
        self.ws, self.user = ws, user
        self.pending: deque[tuple[str, float | None]] = deque()
        self.limit = queue_size
        self.live = False  # set once resume caught up: queued frames may go out
        self.subscribed: set[str] = set()  # only the gateway_subscriptions_never_dropped mutant
        self.overloaded = False
        self.closing = False
        self.sent = 0
        self.sender: asyncio.Task | None = None
        self.batch = -1  # the last stream batch that reached this socket's queue
        self.carried = 0  # frames still queued when that batch came


class Gateway:
    def __init__(self, settings: Settings, adapters: storage.Storage) -> None:
        self.settings = settings
        self.storage = adapters
        self.stream = settings.stream
        self.by_user: dict[uuid.UUID, set[Conn]] = {}
        self.position = "0-0"  # last stream entry fanned out
        self.batch = 0  # stream batches fanned out (a socket's slowness is judged per batch)
        self.recent: OrderedDict[uuid.UUID, None] = OrderedDict()
        self.stopping = asyncio.Event()
        # set once the reader knows where live delivery starts: a socket registered before that
        # would take "0-0" as its resume bound and miss (after, stream end at start]
        self.positioned = asyncio.Event()
        self.resume_slots = asyncio.Semaphore(RESUME_CONCURRENCY)
        self.tokens = tokens.TokenMemory()
        # handshake -> handler: the user and resume point process_request found for a socket
        self.accepted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # sockets the gateway decided to close, and with which code
        self.close_codes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ---- stream side -------------------------------------------------------------------------

    async def start_position(self) -> None:
        """Start live delivery at the stream's current end (earlier entries: by resume only)."""
        while not self.stopping.is_set():
            try:
                last = await self._redis(lambda r: r.xrevrange(self.stream, count=1))
                self.position = last[0][0].decode() if last else "0-0"
                self.positioned.set()
                log.info("reading stream %r after %s", self.stream, self.position)
                return
            except (*streams.TRANSIENT_ERRORS, RedisError) as exc:
                log.warning("cannot read stream %r yet: %s", self.stream, db.describe(exc))
                await self._pause()

    async def read_loop(self) -> None:
        await self.start_position()
        while not self.stopping.is_set():
            try:
                reply = await self._redis(
                    lambda r: r.xread(
                        {self.stream: self.position}, count=READ_BATCH, block=READ_BLOCK_MS
                    ),
                    READ_TIMEOUT,
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    continue
                if not self.by_user:
                    # no socket to deliver to: move on without fetching the rows (a socket that
                    # connects from here on starts after these entries, or resumes them from the
                    # stream; checked and moved with no await between, so none can slip in)
                    self.position = entries[-1][0].decode()
                    metrics.WS_UNWATCHED.inc(len(entries))
                    continue
                frames = await self.frames(entries)
                self.fan_out(frames)
                self.position = entries[-1][0].decode()
            except (*streams.TRANSIENT_ERRORS, RedisError, *db.TRANSIENT_ERRORS) as exc:
                log.warning("delivery paused: %s", db.describe(exc))
                await self._pause()

    async def _redis(self, command, timeout: float = streams.SOCKET_TIMEOUT):
        """One stream command `command(client)` through the stream adapter."""
        return await self.storage.stream.run(command, timeout)

    async def _pause(self) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), RETRY_DELAY)
        except TimeoutError:
            pass

    async def frames(
        self, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[tuple[str, uuid.UUID, frozenset[uuid.UUID], str, float]]:
        """(seq, message id, participants, serialized frame, accepted at) per deliverable entry."""
        decoded = []
        for entry_id, fields in entries:
            try:
                decoded.append((entry_id.decode(), streams.decode(fields)))
            except streams.BadEntry as exc:
                log.warning("skipped stream entry %s: %s", entry_id.decode(), exc)
        if not decoded:
            return []
        ids = list({e.message_id for _, e in decoded})
        rows = await self.storage.postgres.run(lambda conn: conn.fetch(ROWS_SQL, ids))
        by_id = {r["id"]: r for r in rows}
        out = []
        for seq, entry in decoded:
            row = by_id.get(entry.message_id)
            if row is None:
                log.warning("stream entry %s names message %s, not found", seq, entry.message_id)
                continue
            frame = {
                "type": "message",
                "seq": seq,
                "message_id": str(row["id"]),
                "conversation_id": str(row["conversation_id"]),
                "client_msg_id": row["client_msg_id"],
                "accepted_at": entry.created_at,
                "ciphertext": base64.b64encode(row["ciphertext"]).decode(),
            }
            out.append(
                (seq, row["id"], frozenset(row["members"]), json.dumps(frame), entry.created_at)
            )
        return out

    def fan_out(
        self, frames: list[tuple[str, uuid.UUID, frozenset[uuid.UUID], str, float]]
    ) -> None:
        self.batch += 1
        for _seq, message_id, members, text, accepted in frames:
            if message_id in self.recent:
                continue  # re-dispatched after a Redis restart: already delivered
            self.recent[message_id] = None
            if len(self.recent) > RECENT_IDS:
                self.recent.popitem(last=False)
            for user in members:
                for conn in self.by_user.get(user, ()):
                    self.enqueue(conn, text, accepted)
            if mutants.on("gateway_subscriptions_never_dropped"):  # MUTANT: see _subscribed
                self._subscribed(members, text, accepted)
            if mutants.on("gateway_leaks_a_frame"):  # MUTANT (one-shot): a frame to another user
                self._leak(members, text)

    def _subscribed(self, members: frozenset[uuid.UUID], text: str, accepted: float) -> None:
        """The gateway_subscriptions_never_dropped mutant (selfcheck): a socket subscribes to a
        conversation at its first frame and is never unsubscribed, so an open socket of a
        removed participant keeps receiving it (sockets opened after the removal do not)."""
        conversation = json.loads(text)["conversation_id"]
        for user, conns in self.by_user.items():
            for conn in conns:
                if user in members:
                    conn.subscribed.add(conversation)
                elif conversation in conn.subscribed:
                    self.enqueue(conn, text, accepted)

    def _leak(self, members: frozenset[uuid.UUID], text: str) -> None:
        for user, conns in self.by_user.items():
            if user not in members and conns:
                if mutants.once("gateway_leaks_a_frame"):
                    self.enqueue(next(iter(conns)), text)
                return

    def enqueue(self, conn: Conn, text: str, accepted: float | None = None) -> None:
        if conn.closing:
            return
        if conn.batch != self.batch:
            conn.batch, conn.carried = self.batch, len(conn.pending)
        if conn.carried < conn.limit and len(conn.pending) < conn.limit + READ_BATCH:
            # MUTANT: a backed-up socket keeps only its 8 newest frames (the rest dropped silently)
            if mutants.on("gateway_conflates_a_busy_socket") and len(conn.pending) >= 8:
                conn.pending.popleft()
            conn.pending.append((text, accepted))
            if conn.live and conn.sender is None:
                conn.sender = asyncio.get_running_loop().create_task(self.send_loop(conn))
        else:
            conn.overloaded = True
            metrics.WS_OVERLOAD.inc()
            log.warning("closing a socket of user %s: send queue full", conn.user)
            if conn.sender is not None:
                conn.sender.cancel()  # stuck writing to a client that does not read
            self.close(conn, CLOSE_OVERLOAD, "send queue full")

    def close(self, conn: Conn, code: int, reason: str) -> None:
        """Close `conn` with `code` (recorded as the code of this socket's end)."""
        conn.closing = True
        self.close_codes[conn.ws] = code
        asyncio.get_running_loop().create_task(conn.ws.close(code, reason))

    # ---- socket side -------------------------------------------------------------------------

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == "/healthz":
            return _json(ws, HTTPStatus.OK, {"status": "ok"})
        if path == "/readyz":
            pg, rd = await asyncio.gather(
                health.check_postgres(self.storage.postgres),
                health.check_redis(self.storage.stream),
            )
            ok = pg == rd == "ok"
            return _json(
                ws,
                HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                {"status": "ok" if ok else "degraded", "checks": {"postgres": pg, "redis": rd}},
            )
        if path == "/metrics":
            response = ws.respond(HTTPStatus.OK, "")
            body = health.exposition()
            return _with_body(response, body, CONTENT_TYPE_LATEST)
        if path != WS_PATH:
            return _json(ws, HTTPStatus.NOT_FOUND, {"error": "not_found", "detail": path})
        if self.stopping.is_set():
            return _json(ws, HTTPStatus.SERVICE_UNAVAILABLE, _err("unavailable", "shutting down"))
        after = _query(query).get("after")
        if after is not None and not _SEQ.match(after):
            return _json(
                ws,
                HTTPStatus.BAD_REQUEST,
                _err("invalid_after", "after must be the seq of a frame (e.g. 1700000000000-0)"),
            )
        token = _bearer(request.headers)
        if token is None:
            metrics.WS_AUTH_REFUSED.labels("missing").inc()
            return _unauthorized(ws, "send Authorization: Bearer <token>")
        try:
            user = await self.authenticate(token)
        except streams.TRANSIENT_ERRORS as exc:
            metrics.WS_AUTH_REFUSED.labels("unavailable").inc()
            detail = f"redis is unavailable ({type(exc).__name__}); cannot check the token, retry"
            return _json(ws, HTTPStatus.SERVICE_UNAVAILABLE, _err("unavailable", detail))
        if user is None:
            metrics.WS_AUTH_REFUSED.labels("invalid").inc()
            return _unauthorized(ws, "the token is unknown or expired; log in again")
        self.accepted[ws] = (user, after)
        return None

    async def authenticate(self, token: str) -> uuid.UUID | None:
        """Redis first; a remembered token only while Redis cannot answer (as msgstack.tokens)."""
        try:
            user = await tokens.resolve(self.storage.cache, token)
        except streams.TRANSIENT_ERRORS:
            user = self.tokens.recall(token)
            if user is None:
                raise
            return user
        if user is None:
            self.tokens.forget(token)
        else:
            self.tokens.remember(token, user, self.settings.token_ttl)
        return user

    async def handle(self, ws: ServerConnection) -> None:
        user, after = self.accepted.pop(ws)
        await self.positioned.wait()
        conn = Conn(ws, user, self.settings.ws_send_queue)
        metrics.WS_CONNECT.inc()
        metrics.WS_CONNECTIONS.inc()
        start = self.position  # live frames after this go to the queue from now on
        self.by_user.setdefault(user, set()).add(conn)
        try:
            await ws.send(
                json.dumps(
                    {"type": "hello", "user_id": str(user), "cursor": start, "resumed_from": after}
                )
            )
            # MUTANT gateway_no_resume: the client's resume point is ignored
            if after is not None and not mutants.on("gateway_no_resume"):
                metrics.WS_RESUME.inc()
                await self.catch_up(conn, after, start)
            # everything up to `start` is out: from here on the frames are the live ones
            await ws.send(json.dumps({"type": "caught_up", "seq": start}))
            conn.live = True
            if conn.pending and conn.sender is None:
                conn.sender = asyncio.create_task(self.send_loop(conn))
            await self.receive_loop(conn)
        except ConnectionClosed:
            pass
        finally:
            self.by_user.get(user, set()).discard(conn)
            if not self.by_user.get(user):
                self.by_user.pop(user, None)
            conn.closing = True
            if conn.sender is not None:
                conn.sender.cancel()
            metrics.WS_CONNECTIONS.dec()

    async def catch_up(self, conn: Conn, after: str, until: str) -> None:
        """Send the user's frames of stream entries in (after, until], in order.

        At most RESUME_CONCURRENCY sockets catch up at once (after a restart every socket
        resumes together; unbounded, they would exhaust the PostgreSQL pool and starve live
        delivery), and an outage only delays a catch-up: it retries, it never drops the socket.
        """
        async with self.resume_slots:
            cursor = after
            seen: set[uuid.UUID] = set()
            # only the entries of the user's conversations are fetched and sent: a resume after a
            # restart costs each socket its own messages, not the whole stream's
            rows = await self._until_done(
                lambda: self.storage.postgres.run(lambda c: c.fetch(MINE_SQL, conn.user))
            )
            mine = {str(r["conversation_id"]).encode() for r in rows}
            skip_one = mutants.on("gateway_resume_skips_one")  # MUTANT: off by one on resume
            while _seq_key(cursor) < _seq_key(until):
                entries = await self._until_done(
                    lambda c=cursor: self._redis(
                        lambda r: r.xrange(self.stream, f"({c}", until, count=CATCH_UP_CHUNK)
                    )
                )
                if not entries:
                    return
                relevant = [(i, f) for i, f in entries if (f or {}).get(b"conversation_id") in mine]
                frames = await self._until_done(lambda r=relevant: self.frames(r))
                for _seq, message_id, members, text, _accepted in frames:
                    if conn.user in members and message_id not in seen:
                        seen.add(message_id)
                        if skip_one:
                            skip_one = False
                            continue
                        await conn.ws.send(text)
                        conn.sent += 1
                        metrics.WS_FRAMES_SENT.inc()
                        metrics.WS_RESUME_FRAMES.inc()
                cursor = entries[-1][0].decode()

    async def _until_done(self, call):
        """`await call()` again after transient Redis/PostgreSQL errors, until stopping."""
        while True:
            try:
                return await call()
            except (*streams.TRANSIENT_ERRORS, RedisError, *db.TRANSIENT_ERRORS) as exc:
                if self.stopping.is_set():
                    raise
                log.warning("resume delayed: %s", db.describe(exc))
                await asyncio.sleep(RETRY_DELAY)

    async def send_loop(self, conn: Conn) -> None:
        """Write the queued frames in order; ends when the queue is empty (enqueue restarts it)."""
        try:
            if mutants.on("gateway_flush_interval_in_s"):  # MUTANT: a 4 ms flush delay read as s
                await asyncio.sleep(4.0)
            while conn.pending:
                text, accepted = conn.pending.popleft()
                if mutants.once("gateway_corrupts_a_byte"):  # MUTANT (one-shot): a flipped byte
                    text = _corrupt(text)
                if mutants.once("gateway_drops_a_frame"):  # MUTANT (one-shot): a frame lost
                    continue
                await conn.ws.send(text)
                conn.sent += 1
                metrics.WS_FRAMES_SENT.inc()
                if mutants.on("gateway_keeps_sent_frames"):  # MUTANT: 256 KiB kept per frame
                    _MUTANT_KEPT.append(text.encode().ljust(256 * 1024, b" "))
                if accepted is not None:
                    metrics.WS_E2E_LATENCY.observe(max(0.0, time.time() - accepted))
                if mutants.once("gateway_closes_a_socket"):  # MUTANT (one-shot): socket closed
                    await conn.ws.close(CLOSE_GOING_AWAY, "mutant")
        except ConnectionClosed:
            pass
        finally:
            conn.sender = None

    async def receive_loop(self, conn: Conn) -> None:
        async for raw in conn.ws:
            kind = None
            if isinstance(raw, str):
                try:
                    doc = json.loads(raw)
                    kind = doc.get("type") if isinstance(doc, dict) else None
                except ValueError:
                    kind = None
            if kind == "ping":
                if not conn.closing:
                    self.enqueue(conn, '{"type": "pong"}')
                continue
            metrics.WS_MALFORMED.inc()
            self.close_codes[conn.ws] = CLOSE_UNSUPPORTED
            conn.closing = True
            await conn.ws.close(CLOSE_UNSUPPORTED, 'malformed frame: send {"type": "ping"}')
            return

    def closed(self, ws: ServerConnection) -> None:
        proto = ws.protocol
        if ws in self.close_codes:
            code = self.close_codes.pop(ws)
        elif proto.close_sent is not None and (
            proto.close_rcvd is None or proto.close_rcvd_then_sent is False
        ):
            code = proto.close_sent.code
            if code == CLOSE_HEARTBEAT and proto.close_sent.reason == "keepalive ping timeout":
                metrics.WS_HEARTBEAT_TERMINATE.inc()
        elif proto.close_rcvd is not None:
            code = proto.close_rcvd.code
        else:
            code = 1006
        metrics.WS_CLOSE.labels(str(code)).inc()

    async def shutdown(self) -> None:
        self.stopping.set()
        conns = [c for cs in self.by_user.values() for c in cs]
        for c in conns:
            self.close_codes[c.ws] = CLOSE_GOING_AWAY
        await asyncio.gather(
            *(c.ws.close(CLOSE_GOING_AWAY, "gateway restarting") for c in conns),
            return_exceptions=True,
        )


def _seq_key(seq: str) -> tuple[int, int]:
    ms, _, n = seq.partition("-")
    return int(ms), int(n or 0)


def _corrupt(text: str) -> str:
    doc = json.loads(text)
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[len(raw) // 2] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(doc)


def _query(query: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(query))


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _err(error: str, detail: str) -> dict[str, str]:
    return {"error": error, "detail": detail}


def _with_body(response: Response, body: bytes, content_type: str) -> Response:
    headers = Headers(response.headers)
    del headers["Content-Type"]
    del headers["Content-Length"]
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    return Response(response.status_code, response.reason_phrase, headers, body)


def _json(ws: ServerConnection, status: HTTPStatus, doc: dict) -> Response:
    return _with_body(ws.respond(status, ""), json.dumps(doc).encode(), "application/json")


def _unauthorized(ws: ServerConnection, detail: str) -> Response:
    response = _json(ws, HTTPStatus.UNAUTHORIZED, _err("unauthorized", detail))
    response.headers["WWW-Authenticate"] = 'Bearer realm="msgstack"'
    return response


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then close every socket with 1001 and stop."""
    logging.getLogger("websockets").setLevel(logging.WARNING)  # no line per health check
    # a slow device's backlog of large frames is given back once it drains (msgstack/gctune.py)
    gctune.map_large_allocations(os.environ)
    tuning = storage.load()
    pool = await db.create_pool(settings.pg_dsn, settings.pool_max, tuning.statement_timeout_s)
    client = streams.client(settings.redis_url, settings.redis_pool_max)
    gateway = Gateway(settings, storage.Storage.create(pool, client, tuning))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def handler(ws: ServerConnection) -> None:
        try:
            await gateway.handle(ws)
        finally:
            await ws.wait_closed()
            gateway.closed(ws)

    reader = asyncio.create_task(gateway.read_loop())
    async with serve(
        handler,
        settings.host,
        settings.port,
        process_request=gateway.process_request,
        ping_interval=settings.ws_ping_interval,
        ping_timeout=settings.ws_ping_timeout,
        max_size=settings.ws_max_client_frame,
        close_timeout=2,
        server_header=None,
        # no permessage-deflate: ciphertext does not compress, and a deflate context per socket
        # costs ~40 KiB of memory and a compression pass per frame per socket on fan-out
        compression=None,
    ):
        log.info("listening on %s:%s (WebSocket at %s)", settings.host, settings.port, WS_PATH)
        await stop.wait()
        await gateway.shutdown()
    reader.cancel()
    try:
        await asyncio.wait_for(pool.close(), 2.0)
    except TimeoutError:
        pool.terminate()
    await client.aclose()
    log.info("stopped")

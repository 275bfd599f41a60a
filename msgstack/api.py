"""The HTTP API: accept messages (message + outbox row in one transaction) and read them back.

Every request but /healthz, /readyz and /metrics needs ``Authorization: Bearer <token>`` from the
auth service (401 otherwise, 503 while Redis cannot check it; msgstack/tokens.py).
Errors are JSON ``{"error": <code>, "detail": <sentence>}``: 400 for a malformed request, 413 for
a payload over MSGSTACK_MAX_PAYLOAD, 503 while PostgreSQL is unavailable (the pool reconnects by
itself, so the API recovers without a restart). PostgreSQL work goes through the storage layer's
adapter (`msgstack.storage`): while its circuit breaker is open the API answers 503 at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import uuid
from collections import OrderedDict
from typing import Any

import asyncpg
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from msgstack import api_storage, conversations, db, metrics, mutants, participants, tokens
from msgstack.config import MIN_PAYLOAD, Settings
from msgstack.errors import RequestError, unavailable
from msgstack.service import Resources, build_app

__all__ = ["create_app"]

log = logging.getLogger("msgstack.api")

MAX_CLIENT_MSG_ID = 200
# Inserting the message and its outbox row in one statement makes them one transaction in one
# round trip; a repeated client_msg_id inserts neither and returns no row.
# The API role may write outbox rows but never read them (row-level security), so the id comes
# back from the messages insert. This is the insert of the transaction form (BEGIN, set_config,
# this, COMMIT: four round trips), which the benchmark measures beside WRITE_SQL.
INSERT_SQL = """
WITH msg AS (
    INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, size_bytes)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (client_msg_id) DO NOTHING
    RETURNING id
), box AS (
    INSERT INTO outbox (message_id) SELECT id FROM msg
)
SELECT id AS message_id FROM msg
"""
# The same write in ONE round trip outside an explicit transaction: the acting user's setting
# travels in the statement. `acting` is materialized and the inserted row is selected from it, so
# set_config has run before the row exists; the row-level security check (WITH CHECK on messages)
# runs per inserted row, after that, and so judges the acting user: a non-participant is refused
# (InsufficientPrivilegeError) exactly as in the transaction form. `is_local` = true: the setting
# ends with the statement's implicit transaction, so the pooled connection carries no user on.
# Only writes can use this: a read's security qual runs before any user qual (security barrier)
# and would not see the setting; reads keep the transaction form (`db.as_user_unit`).
WRITE_SQL = """
WITH acting AS MATERIALIZED (SELECT set_config('app.user_id', $6::text, true) AS user_id),
msg AS (
    INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, size_bytes)
    SELECT $1::uuid, $2::uuid, $3::text, $4::bytea, $5::int FROM acting
    WHERE acting.user_id = $6::text
    ON CONFLICT (client_msg_id) DO NOTHING
    RETURNING id
), box AS (
    INSERT INTO outbox (message_id) SELECT id FROM msg
)
SELECT id AS message_id FROM msg
"""
# What the API sends PostgreSQL per accepted message (benchmarks/pipeline_bench.py measures the
# ceiling of exactly this with pgbench); a duplicate costs one more transaction (EXISTING_SQL).
WRITE_ROUND_TRIPS = (WRITE_SQL,)
EXISTING_SQL = "SELECT id FROM messages WHERE client_msg_id = $1"
GET_SQL = """
SELECT m.id, m.conversation_id, m.client_msg_id, m.ciphertext, m.size_bytes, m.created_at,
       d.delivered_at
FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id
WHERE m.id = $1
"""


def _body_limit(settings: Settings) -> int:
    # base64 grows the payload by 4/3; leave room for the other fields and JSON whitespace.
    return settings.max_payload * 4 // 3 + 16 * 1024


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"request body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(detail: str) -> RequestError:
    metrics.PAYLOAD_REJECTS.inc()
    return RequestError(413, "payload_too_large", detail)


def _field(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if value is None:
        raise RequestError(400, "missing_field", f"field '{name}' is required")
    if not isinstance(value, str):
        raise RequestError(400, "invalid_field", f"field '{name}' must be a string")
    return value


def _parse(body: bytes, settings: Settings) -> tuple[uuid.UUID, str, bytes]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "invalid_json", "body must be a JSON object")
    try:
        conversation_id = uuid.UUID(_field(doc, "conversation_id"))
    except ValueError:
        raise RequestError(400, "invalid_field", "conversation_id must be a UUID") from None
    client_msg_id = _field(doc, "client_msg_id")
    if not 1 <= len(client_msg_id) <= MAX_CLIENT_MSG_ID:
        raise RequestError(
            400, "invalid_field", f"client_msg_id must be 1..{MAX_CLIENT_MSG_ID} characters"
        )
    try:
        ciphertext = base64.b64decode(_field(doc, "ciphertext"), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "invalid_field", "ciphertext must be standard base64") from None
    limit = settings.max_payload
    if mutants.on("api_payload_limit_in_kb"):  # MUTANT: 64 KiB read as 64 kB (64000 bytes)
        limit = limit // 1024 * 1000
    if len(ciphertext) > limit:
        raise _too_large(f"ciphertext is {len(ciphertext)} bytes, over the {limit}-byte limit")
    if len(ciphertext) < MIN_PAYLOAD:
        raise RequestError(
            400,
            "payload_too_small",
            f"ciphertext is {len(ciphertext)} bytes; the minimum is {MIN_PAYLOAD}",
        )
    return conversation_id, client_msg_id, ciphertext


# the api_memo_bounded_by_conversations mutant (selfcheck): an idempotency memo of accepted
# messages whose bound counts conversations (1000), not the messages kept under each of them
_MEMO: OrderedDict = OrderedDict()


def _memo(conversation_id: uuid.UUID, client_msg_id: str, ciphertext: bytes) -> None:
    _MEMO.setdefault(conversation_id, []).append((client_msg_id, bytes(ciphertext)))
    _MEMO.move_to_end(conversation_id)
    while len(_MEMO) > 1000:
        _MEMO.popitem(last=False)


async def post_message(request: Request) -> JSONResponse:
    res: Resources = request.app.state.resources
    try:
        body = await _read_body(request, _body_limit(res.settings))
        conversation_id, client_msg_id, ciphertext = _parse(body, res.settings)
    except RequestError as exc:
        return exc.response()
    except ClientDisconnect:
        return JSONResponse({"error": "client_disconnected", "detail": ""}, status_code=400)
    try:
        user = conversations.acting_user(request)
        found = await conversations.authorize(request, conversation_id, user, "post_message")
    except RequestError as exc:
        return exc.response()
    except (db.SchemaMissing, *db.TRANSIENT_ERRORS) as exc:
        return unavailable(exc)
    headers = {conversations.CACHE_HEADER: "hit" if found.hit else "miss"}

    new_id = uuid.uuid4()

    async def store(conn: asyncpg.Connection) -> uuid.UUID | None:
        return await conn.fetchval(
            WRITE_SQL,
            new_id,
            conversation_id,
            client_msg_id,
            ciphertext,
            len(ciphertext),
            str(user),
        )

    async def existing(conn: asyncpg.Connection) -> uuid.UUID:
        found = await conn.fetchval(EXISTING_SQL, client_msg_id)
        if found is None:  # conflicting insert rolled back meanwhile: let the client retry
            raise asyncpg.exceptions.SerializationError(
                "concurrent insert of the same client_msg_id"
            )
        return found

    try:
        # the storage adapter (breaker, retries, pool accounting) runs the write as the acting
        # user in one statement: row-level security decides, the adapter guards the dependency
        message_id = await res.storage.postgres.run(store)
        fresh = message_id is not None
        if not fresh:  # a repeated client_msg_id: the first message's id, read as the user
            message_id = await res.storage.postgres.run(db.as_user_unit(user, existing))
    except (db.SchemaMissing, *db.TRANSIENT_ERRORS) as exc:
        return unavailable(exc)
    except asyncpg.InsufficientPrivilegeError:  # removed since the cache answered: policies said no
        return conversations.denied(conversation_id, "post_message").response()
    except asyncpg.SerializationError as exc:
        return JSONResponse({"error": "conflict", "detail": str(exc)}, status_code=409)
    except asyncpg.PostgresError as exc:  # e.g. a lock timeout during a migration: not a crash
        return unavailable(exc)
    if fresh:
        if mutants.on("api_memo_bounded_by_conversations"):  # MUTANT: idempotency memo leaks
            _memo(conversation_id, client_msg_id, ciphertext)
        metrics.MESSAGES_ACCEPTED.inc()
        metrics.MESSAGE_SIZE.observe(len(ciphertext))
        return JSONResponse(
            {"id": str(message_id), "status": "accepted"}, status_code=202, headers=headers
        )
    return JSONResponse(
        {"id": str(message_id), "status": "accepted", "duplicate": True},
        status_code=202,
        headers=headers,
    )


async def get_message(request: Request) -> JSONResponse:
    res: Resources = request.app.state.resources
    try:
        message_id = uuid.UUID(request.path_params["message_id"])
    except ValueError:
        return JSONResponse({"error": "not_found", "detail": "not a message id"}, status_code=404)

    async def load(conn: asyncpg.Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(GET_SQL, message_id)

    try:
        user = conversations.acting_user(request)
        # Row-level security hides the messages of conversations the user is not part of.
        row = await res.storage.postgres.run(db.as_user_unit(user, load))
    except RequestError as exc:
        return exc.response()
    except (db.SchemaMissing, *db.TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
        return unavailable(exc)
    if row is None:
        return JSONResponse(
            {"error": "not_found", "detail": f"no message {message_id}"}, status_code=404
        )
    return JSONResponse(
        {
            "id": str(row["id"]),
            "conversation_id": str(row["conversation_id"]),
            "client_msg_id": row["client_msg_id"],
            "ciphertext": base64.b64encode(row["ciphertext"]).decode(),
            "size_bytes": row["size_bytes"],
            "created_at": row["created_at"].isoformat(),
            "delivered": row["delivered_at"] is not None,
            "delivered_at": row["delivered_at"].isoformat() if row["delivered_at"] else None,
        }
    )


class ServedBy:
    """Adds ``X-Served-By: <pid>`` so clients can tell which worker process answered (the
    participant-invalidation test judges reads served by another process than the removal)."""

    def __init__(self, app) -> None:
        self.app = app
        self.header = (b"x-served-by", str(os.getpid()).encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], self.header]
            await send(message)

        await self.app(scope, receive, tagged)


def create_app(settings: Settings):
    """The API app: messages, conversations and participants behind token authentication, with
    this process' participant cache and its Pub/Sub invalidation listener as background worker."""
    cache = participants.ParticipantCache(
        settings.participant_cache_ttl,
        not mutants.on("participants_no_invalidation"),  # MUTANT: other processes never told
    )

    async def invalidations(res: Resources, stop: asyncio.Event) -> None:
        await participants.listen(res.storage.cache, settings.participant_channel, cache, stop)

    app = build_app(
        settings,
        [
            Route("/v1/messages", post_message, methods=["POST"]),
            Route("/v1/messages/{message_id}", get_message, methods=["GET"]),
            *api_storage.routes(),
            *conversations.routes(),
        ],
        worker=invalidations,
        middleware=[Middleware(ServedBy), Middleware(tokens.BearerAuth)],
    )
    app.state.participant_cache = cache
    return app


def app_from_env():
    """App factory for uvicorn's worker processes (`python -m msgstack api` with several
    workers): each worker reads the same MSGSTACK_* environment."""
    from msgstack.config import load

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s api[%(process)d] %(name)s: %(message)s",
    )
    return create_app(load("api"))

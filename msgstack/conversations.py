"""Conversations and participants: the API's CRUD endpoints, authorized by row-level security.

Every query runs in a transaction whose acting user is the token's user (`db.as_user_unit`, run by
the storage layer's PostgreSQL adapter: bounded wait, retries, the circuit breaker), and no
query filters on "may this user see it": the policies of migration 0004 do. A request about a
conversation first asks the participant cache (`participants.py`) whether the user participates;
the answer decides 403 early and is then re-checked by the policies on the query itself.

Errors follow msgstack/errors.py: 400 malformed input, 403 not a participant
(`sanctum_security_denied_total` grows), 404 no such conversation/participant, 409 stale
`version` (`messaging_conversation_version_conflicts_total` grows), 503 PostgreSQL unavailable.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import uuid
from typing import Any

import asyncpg
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from msgstack import db, metrics, mutants, participants
from msgstack.errors import RequestError, error, unavailable

__all__ = ["acting_user", "authorize", "routes"]

log = logging.getLogger("msgstack.conversations")

MAX_BODY = 64 * 1024
MAX_TITLE = 200
MAX_METADATA = 16 * 1024  # bytes of the metadata object as compact JSON
MAX_INITIAL_PARTICIPANTS = 100
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
CACHE_HEADER = "X-Participant-Cache"

COLUMNS = "c.id, c.title, c.metadata, c.version, c.created_by, c.created_at, c.updated_at"
INSERT_CONVERSATION = """
INSERT INTO conversations (id, title, metadata, created_by) VALUES ($1, $2, $3::jsonb, $4)
"""
INSERT_PARTICIPANTS = """
INSERT INTO participants (conversation_id, user_id)
SELECT $1, u FROM unnest($2::uuid[]) AS u ON CONFLICT DO NOTHING
"""
GET_CONVERSATION = f"SELECT {COLUMNS} FROM conversations c WHERE c.id = $1"
# Mine = where I participate. The join names the acting user only to use the index; the policies
# would hide every other row anyway (tests/test_msgstack_rls.py runs it without the join).
LIST_CONVERSATIONS = f"""
SELECT {COLUMNS}, p.added_at FROM participants p JOIN conversations c ON c.id = p.conversation_id
WHERE p.user_id = msgstack_user()
  AND ($1::timestamptz IS NULL OR (p.added_at, p.conversation_id) < ($1, $2))
ORDER BY p.added_at DESC, p.conversation_id DESC
LIMIT $3
"""
UPDATE_CONVERSATION = f"""
UPDATE conversations c
SET title = coalesce($3, c.title), metadata = coalesce($4::jsonb, c.metadata),
    version = c.version + 1, updated_at = now()
WHERE c.id = $1 AND c.version = $2
RETURNING {COLUMNS}
"""
# the conversations_last_write_wins mutant (selfcheck): the version is taken, never compared
UPDATE_IGNORING_VERSION = UPDATE_CONVERSATION.replace("c.version = $2", "$2::bigint IS NOT NULL")
CURRENT_VERSION = "SELECT version FROM conversations WHERE id = $1"
DELETE_CONVERSATION = "DELETE FROM conversations WHERE id = $1 RETURNING id"
EXISTS = "SELECT msgstack_conversation_exists($1)"
ADD_PARTICIPANT = """
INSERT INTO participants (conversation_id, user_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING RETURNING added_at
"""
REMOVE_PARTICIPANT = """
DELETE FROM participants WHERE conversation_id = $1 AND user_id = $2 RETURNING user_id
"""


# --- request parsing ---------------------------------------------------------------------------


def acting_user(request: Request) -> uuid.UUID:
    """The token's user, set by the authentication middleware (msgstack/tokens.py)."""
    user = getattr(request.state, "user_id", None)
    if not isinstance(user, uuid.UUID):  # the middleware answers 401 first; never trust a default
        raise RequestError(401, "unauthorized", "a valid bearer token is required")
    return user


def _path_uuid(request: Request, name: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError:
        raise RequestError(404, "not_found", f"{what} ids are UUIDs") from None


async def _json_object(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise RequestError(413, "payload_too_large", f"body is over the {MAX_BODY}-byte limit")
    try:
        body = await request.body()
    except ClientDisconnect:
        raise RequestError(400, "client_disconnected", "the client went away") from None
    if len(body) > MAX_BODY:
        raise RequestError(413, "payload_too_large", f"body is over the {MAX_BODY}-byte limit")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "invalid_json", "body must be a JSON object")
    return doc


def _title(doc: dict[str, Any]) -> str | None:
    title = doc.get("title")
    if title is None:
        return None
    if not isinstance(title, str) or len(title) > MAX_TITLE:
        raise RequestError(
            400, "invalid_field", f"title must be a string of at most {MAX_TITLE} characters"
        )
    return title


def _metadata(doc: dict[str, Any]) -> str | None:
    metadata = doc.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise RequestError(400, "invalid_field", "metadata must be a JSON object")
    text = json.dumps(metadata, separators=(",", ":"))
    if len(text.encode()) > MAX_METADATA:
        raise RequestError(
            400, "invalid_field", f"metadata is over {MAX_METADATA} bytes as compact JSON"
        )
    return text


def _uuid_field(value: Any, name: str) -> uuid.UUID:
    if not isinstance(value, str):
        raise RequestError(400, "invalid_field", f"{name} must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise RequestError(400, "invalid_field", f"{name} must be a UUID, got {value!r}") from None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise RequestError(400, "invalid_query", f"limit must be an integer in 1..{MAX_LIMIT}")
    return int(raw)


def _cursor(request: Request) -> tuple[dt.datetime | None, uuid.UUID | None]:
    raw = request.query_params.get("cursor")
    if not raw:
        return None, None
    try:
        stamp, ident = base64.urlsafe_b64decode(raw.encode()).decode().split("|")
        return dt.datetime.fromisoformat(stamp), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RequestError(
            400, "invalid_query", "cursor is not one this API returned (use next_cursor)"
        ) from None


def _next_cursor(added_at: dt.datetime, conversation_id: uuid.UUID) -> str:
    if mutants.on("list_cursor_whole_seconds"):  # MUTANT: the cursor keeps whole seconds only
        added_at = added_at.replace(microsecond=0)
    return base64.urlsafe_b64encode(f"{added_at.isoformat()}|{conversation_id}".encode()).decode()


def _render(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "title": row["title"],
        "metadata": json.loads(row["metadata"]),
        "version": row["version"],
        "created_by": str(row["created_by"]),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


# --- authorization ------------------------------------------------------------------------------


def _resources(request: Request):
    return request.app.state.resources


def _cache(request: Request) -> participants.ParticipantCache:
    return request.app.state.participant_cache


async def _as_user(res, user: uuid.UUID, work, idempotent: bool = True):
    """`work(conn)` in one transaction whose acting user is `user`, through the storage adapter
    (idempotent work is retried on a fresh connection; SchemaMissing before migrations)."""
    try:
        return await res.storage.postgres.run(db.as_user_unit(user, work), idempotent=idempotent)
    except asyncpg.UndefinedTableError as exc:
        raise db.SchemaMissing() from exc


async def _missing_or_forbidden(
    res, conversation_id: uuid.UUID, user: uuid.UUID, operation: str
) -> RequestError:
    """404 when the conversation does not exist, else 403 (and count the denial)."""

    async def exists(conn: asyncpg.Connection) -> bool:
        return await conn.fetchval(EXISTS, conversation_id)

    if not await _as_user(res, user, exists):
        return RequestError(404, "not_found", f"no conversation {conversation_id}")
    return denied(conversation_id, operation)


def denied(conversation_id: uuid.UUID, operation: str) -> RequestError:
    metrics.SECURITY_DENIED.labels(operation).inc()
    return RequestError(
        403, "forbidden", f"you are not a participant of conversation {conversation_id}"
    )


async def authorize(
    request: Request, conversation_id: uuid.UUID, user: uuid.UUID, operation: str
) -> participants.Lookup:
    """The participants of the conversation if `user` is one; else RequestError 403/404."""
    res = _resources(request)
    found = await _cache(request).lookup(_runner(res), conversation_id, user)
    if not found.allows(user):
        raise await _missing_or_forbidden(res, conversation_id, user, operation)
    return found


def _runner(res) -> participants.Runner:
    """How a participant lookup reaches PostgreSQL: through the storage adapter (bounded wait,
    retries, the circuit breaker: refused at once while it is open)."""

    async def run(unit):
        try:
            return await res.storage.postgres.run(unit)
        except asyncpg.UndefinedTableError as exc:
            raise db.SchemaMissing() from exc

    return run


def _cache_headers(found: participants.Lookup) -> dict[str, str]:
    return {CACHE_HEADER: "hit" if found.hit else "miss"}


async def _announce(request: Request, conversation_id: uuid.UUID) -> None:
    res = _resources(request)
    await participants.announce(
        res.storage.cache, res.settings.participant_channel, _cache(request), conversation_id
    )


# --- endpoints ----------------------------------------------------------------------------------


async def _handle(request: Request, handler) -> Response:
    try:
        return await handler(request)
    except RequestError as exc:
        return exc.response()
    except (db.SchemaMissing, *db.TRANSIENT_ERRORS) as exc:
        return unavailable(exc)


def _endpoint(handler):
    async def endpoint(request: Request) -> Response:
        return await _handle(request, handler)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


@_endpoint
async def create_conversation(request: Request) -> Response:
    """POST /v1/conversations {title?, metadata?, participants?: [user id]} -> 201."""
    user = acting_user(request)
    doc = await _json_object(request)
    title, metadata = _title(doc) or "", _metadata(doc) or "{}"
    others = doc.get("participants", [])
    if not isinstance(others, list) or len(others) > MAX_INITIAL_PARTICIPANTS:
        raise RequestError(
            400,
            "invalid_field",
            f"participants must be a list of at most {MAX_INITIAL_PARTICIPANTS} user ids",
        )
    members = [user, *(_uuid_field(u, "participants[]") for u in others)]
    conversation_id = uuid.uuid4()
    cache = _cache(request)
    token = cache.token(conversation_id)

    async def create(conn: asyncpg.Connection) -> asyncpg.Record:
        await conn.execute(INSERT_CONVERSATION, conversation_id, title, metadata, user)
        # The creator first: the policy lets a creator add itself, then a participant add others.
        await conn.execute(INSERT_PARTICIPANTS, conversation_id, [user])
        await conn.execute(INSERT_PARTICIPANTS, conversation_id, members[1:])
        return await conn.fetchrow(GET_CONVERSATION, conversation_id)

    try:
        row = await _as_user(_resources(request), user, create, idempotent=False)
    except asyncpg.ForeignKeyViolationError:
        raise RequestError(400, "unknown_user", "a participant is not a known user") from None
    unique = frozenset(members)
    cache.put(conversation_id, unique, token)
    return JSONResponse(
        {**_render(row), "participants": sorted(str(m) for m in unique)}, status_code=201
    )


@_endpoint
async def list_conversations(request: Request) -> Response:
    """GET /v1/conversations?limit=&cursor= -> my conversations, newest membership first."""
    user = acting_user(request)
    limit = _limit(request)
    after, after_id = _cursor(request)

    async def page(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await conn.fetch(LIST_CONVERSATIONS, after, after_id, limit + 1)

    rows = await _as_user(_resources(request), user, page)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = _next_cursor(rows[-1]["added_at"], rows[-1]["id"]) if more else None
    return JSONResponse({"conversations": [_render(r) for r in rows], "next_cursor": cursor})


@_endpoint
async def get_conversation(request: Request) -> Response:
    """GET /v1/conversations/{id}: row-level security alone decides (no cache)."""
    user = acting_user(request)
    conversation_id = _path_uuid(request, "conversation_id", "conversation")
    res = _resources(request)

    async def load(conn: asyncpg.Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(GET_CONVERSATION, conversation_id)

    row = await _as_user(res, user, load)
    if row is None:
        raise await _missing_or_forbidden(res, conversation_id, user, "get")
    return JSONResponse(_render(row))


@_endpoint
async def update_conversation(request: Request) -> Response:
    """PATCH /v1/conversations/{id} {version, title?, metadata?} -> 200, or 409 when stale."""
    user = acting_user(request)
    conversation_id = _path_uuid(request, "conversation_id", "conversation")
    doc = await _json_object(request)
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RequestError(
            400, "invalid_field", "version (a positive integer, as last read) is required"
        )
    title, metadata = _title(doc), _metadata(doc)
    if title is None and metadata is None:
        raise RequestError(400, "missing_field", "give title and/or metadata to update")
    found = await authorize(request, conversation_id, user, "update")
    res = _resources(request)

    async def update(conn: asyncpg.Connection) -> tuple[asyncpg.Record | None, int | None]:
        sql = UPDATE_CONVERSATION
        if mutants.on("conversations_last_write_wins"):  # MUTANT: stale updates overwrite
            sql = UPDATE_IGNORING_VERSION
        row = await conn.fetchrow(sql, conversation_id, version, title, metadata)
        if row is not None:
            return row, None
        return None, await conn.fetchval(CURRENT_VERSION, conversation_id)

    row, current = await _as_user(res, user, update, idempotent=False)
    headers = _cache_headers(found)
    if row is not None:
        return JSONResponse(_render(row), headers=headers)
    if current is None:  # removed or deleted since the cache answered: the policies said no
        raise await _missing_or_forbidden(res, conversation_id, user, "update")
    metrics.CONVERSATION_VERSION_CONFLICTS.inc()
    return JSONResponse(
        {
            "error": "version_conflict",
            "detail": f"version {version} is stale; the conversation is at version {current}",
            "current_version": current,
        },
        status_code=409,
        headers=headers,
    )


@_endpoint
async def delete_conversation(request: Request) -> Response:
    """DELETE /v1/conversations/{id} -> 204 (participants go with it)."""
    user = acting_user(request)
    conversation_id = _path_uuid(request, "conversation_id", "conversation")
    found = await authorize(request, conversation_id, user, "delete")
    res = _resources(request)

    async def delete(conn: asyncpg.Connection) -> uuid.UUID | None:
        return await conn.fetchval(DELETE_CONVERSATION, conversation_id)

    if await _as_user(res, user, delete) is None:
        raise await _missing_or_forbidden(res, conversation_id, user, "delete")
    await _announce(request, conversation_id)
    return Response(status_code=204, headers=_cache_headers(found))


@_endpoint
async def list_participants(request: Request) -> Response:
    """GET /v1/conversations/{id}/participants: answered from the cache when it can."""
    user = acting_user(request)
    conversation_id = _path_uuid(request, "conversation_id", "conversation")
    found = await authorize(request, conversation_id, user, "participants")
    return JSONResponse(
        {
            "conversation_id": str(conversation_id),
            "participants": sorted(str(m) for m in found.members),
        },
        headers=_cache_headers(found),
    )


@_endpoint
async def add_participant(request: Request) -> Response:
    """POST /v1/conversations/{id}/participants {user_id} -> 201 (200 if already there)."""
    user = acting_user(request)
    conversation_id = _path_uuid(request, "conversation_id", "conversation")
    doc = await _json_object(request)
    if "user_id" not in doc:
        raise RequestError(400, "missing_field", "field 'user_id' is required")
    added = _uuid_field(doc["user_id"], "user_id")
    found = await authorize(request, conversation_id, user, "add_participant")
    res = _resources(request)

    async def add(conn: asyncpg.Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(ADD_PARTICIPANT, conversation_id, added)

    try:
        row = await _as_user(res, user, add)
    except asyncpg.InsufficientPrivilegeError:  # removed since the cache answered
        raise denied(conversation_id, "add_participant") from None
    except asyncpg.ForeignKeyViolationError:
        raise RequestError(400, "unknown_user", f"{added} is not a known user") from None
    if row is not None:
        await _announce(request, conversation_id)
    return JSONResponse(
        {"conversation_id": str(conversation_id), "user_id": str(added), "added": row is not None},
        status_code=201 if row is not None else 200,
        headers=_cache_headers(found),
    )


@_endpoint
async def remove_participant(request: Request) -> Response:
    """DELETE /v1/conversations/{id}/participants/{user_id} -> 200 once every process is told."""
    user = acting_user(request)
    conversation_id = _path_uuid(request, "conversation_id", "conversation")
    removed = _path_uuid(request, "user_id", "user")
    found = await authorize(request, conversation_id, user, "remove_participant")
    res = _resources(request)

    async def remove(conn: asyncpg.Connection) -> uuid.UUID | None:
        return await conn.fetchval(REMOVE_PARTICIPANT, conversation_id, removed)

    if await _as_user(res, user, remove, idempotent=False) is None:
        return error(
            404, "not_found", f"{removed} is not a participant of conversation {conversation_id}"
        )
    await _announce(request, conversation_id)
    return JSONResponse(
        {"conversation_id": str(conversation_id), "user_id": str(removed), "removed": True},
        headers=_cache_headers(found),
    )


def routes() -> list[Route]:
    return [
        Route("/v1/conversations", create_conversation, methods=["POST"]),
        Route("/v1/conversations", list_conversations, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", get_conversation, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", update_conversation, methods=["PATCH"]),
        Route("/v1/conversations/{conversation_id}", delete_conversation, methods=["DELETE"]),
        Route(
            "/v1/conversations/{conversation_id}/participants", list_participants, methods=["GET"]
        ),
        Route(
            "/v1/conversations/{conversation_id}/participants", add_participant, methods=["POST"]
        ),
        Route(
            "/v1/conversations/{conversation_id}/participants/{user_id}",
            remove_participant,
            methods=["DELETE"],
        ),
    ]

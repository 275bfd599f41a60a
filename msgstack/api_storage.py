"""API endpoints that exercise the storage adapters directly (plan test 7's mixed load).

- ``POST /v1/storage/events`` publishes a small event to ``MSGSTACK_EVENTS_STREAM`` through the
  stream adapter (approximately trimmed, so a soak cannot fill Redis): 202 ``{"id": <entry id>}``.
- ``GET /v1/storage/conversations/{id}/summary`` reads a conversation's message count and last
  message time through the cache adapter (read-through: Redis, else PostgreSQL, then cached for
  ``MSGSTACK_CACHE_TTL_S``): 200 ``{"conversation_id", "messages", "last_at", "cached"}``.

PostgreSQL writes are the API's own ``POST /v1/messages``. A dependency in trouble, or an open
breaker, answers 503 at once with ``Retry-After``; never 500.
"""

from __future__ import annotations

import json
import uuid

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from msgstack import db, metrics, storage, streams
from msgstack.service import Resources

__all__ = ["routes"]

MAX_EVENT_BYTES = 4096
SUMMARY_SQL = """
SELECT count(*) AS messages, max(created_at) AS last_at
FROM messages WHERE conversation_id = $1
"""


def _error(status: int, error: str, detail: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _unavailable(dependency: str, exc: BaseException) -> JSONResponse:
    metrics.API_UNAVAILABLE.labels(dependency).inc()
    retry_after = exc.retry_after if isinstance(exc, storage.BreakerOpen) else 1.0
    response = _error(503, "unavailable", db.describe(exc), retry_after)
    if isinstance(exc, storage.BreakerOpen):
        response.headers["X-Circuit-Breaker"] = "open"
    return response


async def publish_event(request: Request) -> JSONResponse:
    res: Resources = request.app.state.resources
    body = await request.body()
    if len(body) > MAX_EVENT_BYTES:
        return _error(413, "payload_too_large", f"an event is at most {MAX_EVENT_BYTES} bytes")
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "invalid_json", "body is not valid JSON")
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        return _error(400, "invalid_json", "body must be a JSON object of string fields")
    fields = doc or {"kind": "event"}
    settings = res.storage.settings
    try:
        entry = await res.storage.stream.publish(
            settings.events_stream, fields, maxlen=settings.events_maxlen
        )
    except streams.TRANSIENT_ERRORS as exc:  # BreakerOpen included
        return _unavailable("redis", exc)
    return JSONResponse({"id": entry}, status_code=202)


async def conversation_summary(request: Request) -> JSONResponse:
    res: Resources = request.app.state.resources
    try:
        conversation_id = uuid.UUID(request.path_params["conversation_id"])
    except ValueError:
        return _error(404, "not_found", "not a conversation id")

    async def load() -> bytes:
        row = await res.storage.postgres.run(lambda c: c.fetchrow(SUMMARY_SQL, conversation_id))
        last = row["last_at"].isoformat() if row["last_at"] else None
        return json.dumps({"messages": row["messages"], "last_at": last}).encode()

    try:
        value, cached = await res.storage.cache.get_or_load(f"summary:{conversation_id}", load)
    except (*db.TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
        return _unavailable("postgres", exc)
    summary = json.loads(value)
    return JSONResponse({"conversation_id": str(conversation_id), **summary, "cached": cached})


def routes() -> list[Route]:
    return [
        Route("/v1/storage/events", publish_event, methods=["POST"]),
        Route(
            "/v1/storage/conversations/{conversation_id}/summary",
            conversation_summary,
            methods=["GET"],
        ),
    ]

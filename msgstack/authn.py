"""Bearer-token authentication middleware (placeholder written against the issue-9 contract).

Contract shared with the auth service: Redis key ``auth:token:<token>`` holds the user id (uuid
string) with a TTL. Every request except /healthz, /readyz and /metrics needs
``Authorization: Bearer <token>``; the middleware sets ``request.state.user_id`` (uuid.UUID) or
answers 401. (Replaced by the auth branch's module when it is merged.)
"""

from __future__ import annotations

import json
import time
import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from msgstack import streams

__all__ = ["OPEN_PATHS", "TOKEN_PREFIX", "TokenAuthMiddleware"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
TOKEN_PREFIX = "auth:token:"
# A token seen valid is trusted for this long (never past its Redis TTL) without asking Redis
# again, so the API keeps accepting messages through a short Redis outage (it needs PostgreSQL
# only for that) and spares Redis one GET per request.
TOKEN_CACHE_SECONDS = 30.0
TOKEN_CACHE_MAX = 100_000


class TokenAuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._seen: dict[str, tuple[uuid.UUID, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await _answer(send, 401, "unauthenticated", "send Authorization: Bearer <token>")
            return
        token = token.strip()
        now = time.monotonic()
        seen = self._seen.get(token)
        if seen is not None and seen[1] > now:
            user = seen[0]
        else:
            redis = scope["app"].state.resources.redis
            try:
                raw, ttl = await redis.get(TOKEN_PREFIX + token), None
                if raw is not None:
                    ttl = await redis.ttl(TOKEN_PREFIX + token)
            except streams.TRANSIENT_ERRORS:
                await _answer(send, 503, "unavailable", "redis is unavailable; retry later")
                return
            try:
                user = uuid.UUID(raw.decode() if isinstance(raw, bytes) else str(raw))
            except (ValueError, AttributeError):
                user = None
            if raw is None or user is None:
                await _answer(send, 401, "unauthenticated", "the token is unknown or expired")
                return
            if len(self._seen) >= TOKEN_CACHE_MAX:
                self._seen.clear()
            keep = TOKEN_CACHE_SECONDS if not ttl or ttl < 0 else min(TOKEN_CACHE_SECONDS, ttl)
            self._seen[token] = (user, now + keep)
        scope.setdefault("state", {})["user_id"] = user
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})

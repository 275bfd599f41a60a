"""Bearer tokens: the contract between the auth service, which issues them, and every other API.

A token is an opaque random string (``secrets.token_urlsafe(32)``, 43 characters). The auth service
stores ``auth:token:<token>`` -> ``<user id>`` (a UUID string) in Redis with a TTL
(``MSGSTACK_AUTH_TOKEN_TTL``); nothing else about a token is kept anywhere. Resolving a token is
one ``GET``: it needs Redis only, never PostgreSQL, so tokens keep working while PostgreSQL is down
and are all gone when Redis restarts empty (clients then log in again).

While Redis is up every request is checked against Redis (a deleted or expired token stops working
at once). Each process also remembers the tokens it resolved and when they expire (`TokenMemory`);
only while Redis cannot answer does it accept a remembered, unexpired token without asking, so an
API keeps taking messages through a Redis outage (the dispatcher parks them; plan tests 9 and 11)
for clients it has already seen. A token it has never seen gets 503 then. After one Redis failure
the process stops asking Redis for `REDIS_RETRY_AFTER` seconds, so an outage does not add a
connect timeout to every request. Token keys are read and written through the storage layer's
cache adapter (msgstack.storage: timeout, retry of a lost connection, the cache breaker, whose
refusal while open is one more Redis failure here).

Token cache (``MSGSTACK_AUTH_TOKEN_CACHE_MS``, default 0 = off): with a bound B > 0 a process
accepts a token it checked against Redis less than B ago without asking again (never past the
token's expiry as Redis gave it then). That is the documented revocation bound: a deleted token
(logout) or one whose TTL was shortened in Redis stops working in every process at most B after
the change; with B = 0 at once. The embedded stack sets 1000 ms (chaosmessaging's launcher): at
hundreds of requests per second per token, one Redis round trip per second per token instead of
per request. With a bound, requests that miss the cache together (a cold start, the moment an
entry gets older than B) share one check (msgstack/singleflight.py): the answer they share is
one Redis round trip old, far inside B. Without a bound every request asks Redis itself.

`BearerAuth` is a plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which buffers
and costs a task per request) that every API app installs. For every path except
`EXEMPT_PATHS` it answers

- 401 ``{"error": "unauthorized", "detail": ...}`` (with ``WWW-Authenticate: Bearer``) when the
  ``Authorization: Bearer <token>`` header is missing, malformed, unknown or expired;
- 503 ``{"error": "unavailable", ...}`` when Redis cannot answer (a dependency outage is not the
  client's fault, so it must not read as "log in again");

and otherwise sets ``request.state.user_id`` (a `uuid.UUID`) and passes the request on. Handlers
read it with `user_id(request)`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from msgstack import metrics, streams, workershare
from msgstack.singleflight import SingleFlight
from msgstack.workershare import SharedTokens

if TYPE_CHECKING:
    from msgstack.storage import CacheAdapter

__all__ = [
    "EXEMPT_PATHS",
    "TOKEN_PREFIX",
    "BearerAuth",
    "TokenMemory",
    "new_token",
    "resolve",
    "store_token",
    "token_key",
    "user_id",
]

log = logging.getLogger("msgstack.tokens")

TOKEN_PREFIX = "auth:token:"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# token_urlsafe's alphabet; anything else (or absurdly long) is refused without asking Redis
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
REDIS_RETRY_AFTER = 1.0
MEMORY_SIZE = 100_000


def new_token() -> str:
    """A fresh opaque token (256 random bits)."""
    return secrets.token_urlsafe(32)


def token_key(token: str) -> str:
    """The Redis key holding the user id of `token`."""
    return f"{TOKEN_PREFIX}{token}"


async def store_token(keys: CacheAdapter, token: str, user: uuid.UUID, ttl: int) -> None:
    """Make `token` resolve to `user` for `ttl` seconds."""
    key = token_key(token)
    await keys.run(lambda r: r.set(key, str(user), ex=ttl), streams.SOCKET_TIMEOUT)


async def resolve(keys: CacheAdapter, token: str) -> uuid.UUID | None:
    """The user id `token` stands for, or None if it is unknown, expired or malformed.

    Redis errors propagate (callers answer 503, not 401).
    """
    user, _ttl = await _lookup(keys, token)
    return user


async def _lookup(keys: CacheAdapter, token: str) -> tuple[uuid.UUID | None, float]:
    """(user id or None, seconds the token still lives) in one round trip."""
    if not _TOKEN_SHAPE.match(token):
        return None, 0.0
    key = token_key(token)

    async def get_with_ttl(r) -> list:
        async with r.pipeline(transaction=False) as pipe:
            return await pipe.get(key).pttl(key).execute()

    raw, pttl = await keys.run(get_with_ttl, streams.SOCKET_TIMEOUT)
    if raw is None:
        return None, 0.0
    try:
        user = uuid.UUID(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        log.warning("token key holds something that is not a user id; treating it as unknown")
        return None, 0.0
    return user, (pttl / 1000 if pttl and pttl > 0 else 0.0)


class TokenMemory:
    """Tokens this process resolved, with their expiry: used only while Redis cannot answer."""

    def __init__(self, size: int = MEMORY_SIZE, shared: SharedTokens | None = None) -> None:
        self.size = size
        # token -> (user, expires at, checked against Redis at), monotonic clock
        self._known: OrderedDict[str, tuple[uuid.UUID, float, float]] = OrderedDict()
        self.redis_down_until = 0.0
        # sibling worker processes of the same API (msgstack/workershare.py), if any
        self.shared = shared

    def remember(self, token: str, user: uuid.UUID, ttl: float) -> None:
        if self.shared is not None and token not in self._known:
            self.shared.put(token, user, ttl)
        now = time.monotonic()
        self._known[token] = (user, now + ttl, now)
        self._known.move_to_end(token)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    def forget(self, token: str) -> None:
        if self._known.pop(token, None) is not None and self.shared is not None:
            self.shared.delete(token)

    def recall(self, token: str) -> uuid.UUID | None:
        known = self._known.get(token)
        if known is None and self.shared is not None:
            sibling = self.shared.get(token)  # resolved by another worker of this API
            if sibling is not None:
                # never checked by this process: it cannot count as fresh for the token cache
                self._known[token] = known = (sibling[0], time.monotonic() + sibling[1], -1e18)
        if known is None or known[1] <= time.monotonic():
            return None
        return known[0]

    def fresh(self, token: str, bound: float) -> uuid.UUID | None:
        """The user of `token` if this process checked it against Redis less than `bound` seconds
        ago and it had not expired by then (the token cache); else None."""
        known = self._known.get(token)
        if known is None:
            return None
        now = time.monotonic()
        if now - known[2] >= bound or known[1] <= now:
            return None
        return known[0]


class RedisUnavailable(ConnectionError):
    """Redis failed moments ago and the token is not remembered: answer 503 without asking."""


def user_id(request: Request) -> uuid.UUID:
    """The authenticated user of `request` (set by `BearerAuth`)."""
    return request.state.user_id


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _default_keys(scope: Scope) -> CacheAdapter:
    return scope["app"].state.resources.storage.cache


class BearerAuth:
    """ASGI middleware: authenticate every request except `EXEMPT_PATHS` (see module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        keys_of: Callable[[Scope], CacheAdapter] = _default_keys,
        exempt: frozenset[str] = EXEMPT_PATHS,
        cache_s: float | None = None,
    ) -> None:
        self.app, self.keys_of, self.exempt = app, keys_of, exempt
        self.memory = TokenMemory(shared=workershare.from_env())
        self.cache_s = cache_s  # None: the app's settings say (MSGSTACK_AUTH_TOKEN_CACHE_MS)
        self._checks: SingleFlight[uuid.UUID | None] = SingleFlight("token")

    def _cache_bound(self, scope: Scope) -> float:
        if self.cache_s is None:
            resources = getattr(getattr(scope.get("app"), "state", None), "resources", None)
            if resources is None:
                return 0.0
            self.cache_s = resources.settings.token_cache_s
        return self.cache_s

    async def _check(self, keys: CacheAdapter, token: str) -> uuid.UUID | None:
        """Ask Redis about `token` and remember (or forget) the answer."""
        user, ttl = await _lookup(keys, token)
        if user is None:
            self.memory.forget(token)
        else:
            self.memory.remember(token, user, ttl)
        return user

    async def _authenticate(self, scope: Scope, token: str) -> uuid.UUID | None:
        """The user of `token`; raises a Redis error only for a token this process never saw."""
        memory = self.memory
        bound = self._cache_bound(scope)
        if bound > 0:
            user = memory.fresh(token, bound)
            if user is not None:
                return user
        if time.monotonic() >= memory.redis_down_until:
            keys = self.keys_of(scope)
            try:
                if bound > 0:  # requests that miss together share one check (younger than B)
                    user, _joined = await self._checks.run(token, lambda: self._check(keys, token))
                else:  # no bound: every request asks Redis itself
                    user = await self._check(keys, token)
            except streams.TRANSIENT_ERRORS:
                memory.redis_down_until = time.monotonic() + REDIS_RETRY_AFTER
                user = memory.recall(token)
                if user is None:
                    raise
                metrics.API_TOKENS_REMEMBERED.inc()
                return user
            return user
        user = memory.recall(token)
        if user is None:
            raise RedisUnavailable("redis failed less than a second ago")
        metrics.API_TOKENS_REMEMBERED.inc()
        return user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None:
            metrics.API_UNAUTHORIZED.labels("missing").inc()
            await self._deny(scope, send, 401, "unauthorized", "send Authorization: Bearer <token>")
            return
        try:
            user = await self._authenticate(scope, token)
        except streams.TRANSIENT_ERRORS as exc:
            metrics.API_UNAVAILABLE.labels("redis").inc()
            detail = f"redis is unavailable ({type(exc).__name__}); cannot check the token, retry"
            await self._deny(scope, send, 503, "unavailable", detail)
            return
        if user is None:
            metrics.API_UNAUTHORIZED.labels("invalid").inc()
            await self._deny(
                scope, send, 401, "unauthorized", "the token is unknown or expired; log in again"
            )
            return
        scope.setdefault("state", {})["user_id"] = user
        await self.app(scope, receive, send)

    @staticmethod
    async def _deny(scope: Scope, send: Send, status: int, error: str, detail: str) -> None:
        if scope["type"] == "websocket":
            # close before accepting: the client sees the handshake refused (403 from uvicorn)
            await send({"type": "websocket.close", "code": 1008, "reason": error})
            return
        body = json.dumps({"error": error, "detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="msgstack"'))
        else:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

"""The auth service (``python -m msgstack auth``): ``POST /v1/auth/login`` issues bearer tokens.

Login: look the user up in PostgreSQL, verify the password with argon2id in a thread pool (never
on the event loop), store a fresh opaque token in Redis with a TTL (contract in msgstack/tokens.py)
and answer ``200 {"token", "token_type": "Bearer", "expires_in", "user_id"}``.

Errors are JSON ``{"error", "detail"}``: 400 for a malformed request, 401 ``invalid_credentials``
for a wrong password *and* for an unknown user (same answer, same KDF cost: no enumeration), 503
``unavailable`` while PostgreSQL or Redis cannot answer (tokens already issued keep working: they
live in Redis only), 503 ``overloaded`` when more than MSGSTACK_AUTH_KDF_MAX_PENDING verifications
are waiting for the KDF pool (bounded latency and memory instead of an unbounded queue).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from msgstack import db, metrics, mutants, passwords, streams, tokens
from msgstack.config import Settings
from msgstack.service import Resources, build_app

__all__ = ["create_app"]

log = logging.getLogger("msgstack.auth")

MAX_BODY = 4096
MAX_USERNAME = 150
MAX_PASSWORD = 1024
USER_SQL = "SELECT id, password_hash FROM users WHERE username = $1"
_MUTANT_KEPT: list = []  # what the auth_* mutants hold on to (selfcheck only; empty in real use)


class _LoginError(Exception):
    def __init__(self, status: int, error: str, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.reason = status, error, detail, reason

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 503 else None
        if self.status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="msgstack"'}
        return JSONResponse(
            {"error": self.error, "detail": self.detail}, status_code=self.status, headers=headers
        )


def _bad(detail: str) -> _LoginError:
    return _LoginError(400, "bad_request", detail, "bad_request")


def _unavailable(dependency: str, exc: BaseException) -> _LoginError:
    metrics.API_UNAVAILABLE.labels(dependency).inc()
    if isinstance(exc, db.SchemaMissing | db.PoolExhausted):
        detail = str(exc)
    else:
        detail = f"{dependency} is unavailable ({db.describe(exc)}); retry later"
    return _LoginError(503, "unavailable", detail, "unavailable")


INVALID = _LoginError(
    401, "invalid_credentials", "username or password is incorrect", "invalid_credentials"
)


class _Tally:
    """Attempts and successes since start, for the auth_login_success_rate gauge."""

    attempts = 0
    successes = 0

    @classmethod
    def record(cls, success: bool) -> None:
        cls.attempts += 1
        cls.successes += success
        metrics.AUTH_LOGIN_SUCCESS_RATE.set(cls.successes / cls.attempts)


async def _read_credentials(request: Request) -> tuple[str, str]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise _bad(f"request body is over {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _bad(f"request body is over {MAX_BODY} bytes")
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad('body is not valid JSON; send {"username": ..., "password": ...}') from None
    if not isinstance(doc, dict):
        raise _bad('body must be a JSON object {"username": ..., "password": ...}')
    values = []
    for name, limit in (("username", MAX_USERNAME), ("password", MAX_PASSWORD)):
        value = doc.get(name)
        if value is None or value == "":
            raise _bad(f"field '{name}' is required")
        if not isinstance(value, str):
            raise _bad(f"field '{name}' must be a string")
        if len(value) > limit:
            raise _bad(f"field '{name}' is longer than {limit} characters")
        values.append(value)
    return values[0], values[1]


class _Login:
    """The login endpoint with its KDF pool (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hasher = passwords.hasher(settings)
        self.dummy = passwords.dummy_hash(self.hasher)
        # the auth_equalizer_strong_dummy mutant (selfcheck): a second, "timing-equalizing"
        # verification on every login, against a dummy hashed at five times the cost
        self.strong_dummy = (
            passwords.dummy_hash(
                PasswordHasher(
                    time_cost=settings.argon2_time_cost * 5,
                    memory_cost=settings.argon2_memory_kib,
                    parallelism=settings.argon2_parallelism,
                )
            )
            if mutants.on("auth_equalizer_strong_dummy")
            else None
        )
        self.executor = ThreadPoolExecutor(settings.kdf_threads, thread_name_prefix="kdf")
        self.pending = 0

    def _verify(self, password_hash: str, password: str) -> bool:
        started = time.perf_counter()
        try:
            return passwords.verify(self.hasher, password_hash, password)
        finally:
            metrics.AUTH_VERIFY_SECONDS.observe(time.perf_counter() - started)

    async def verify(self, password_hash: str, password: str) -> bool:
        if self.pending >= self.settings.kdf_max_pending:
            raise _LoginError(
                503,
                "overloaded",
                f"{self.pending} logins are already waiting for password verification; retry",
                "overloaded",
            )
        self.pending += 1
        metrics.AUTH_KDF_PENDING.inc()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, self._verify, password_hash, password)
        finally:
            self.pending -= 1
            metrics.AUTH_KDF_PENDING.dec()

    async def handle(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        metrics.AUTH_LOGIN_ATTEMPTS.inc()
        res: Resources = request.app.state.resources
        try:
            answer = await self._login(request, res, started)
        except _LoginError as exc:
            metrics.AUTH_LOGIN_FAILURES.labels(exc.reason).inc()
            _Tally.record(False)
            return exc.response()
        except ClientDisconnect:
            metrics.AUTH_LOGIN_FAILURES.labels("bad_request").inc()
            _Tally.record(False)
            return JSONResponse({"error": "client_disconnected", "detail": ""}, status_code=400)
        metrics.AUTH_LOGIN_SUCCESS.inc()
        _Tally.record(True)
        return answer

    async def _login(self, request: Request, res: Resources, started: float) -> JSONResponse:
        username, password = await _read_credentials(request)

        async def find(conn: asyncpg.Connection) -> asyncpg.Record | None:
            return await conn.fetchrow(USER_SQL, username)

        try:
            row = await res.storage.postgres.run(find)
        except asyncpg.UndefinedTableError:
            raise _unavailable("postgres", db.SchemaMissing()) from None
        except (db.SchemaMissing, *db.TRANSIENT_ERRORS) as exc:
            raise _unavailable("postgres", exc) from None
        # An unknown user costs one verification too: same answer, same time.
        matched = await self.verify(row["password_hash"] if row else self.dummy, password)
        if self.strong_dummy is not None:  # MUTANT: every login pays a 5x-cost verification more
            await self.verify(self.strong_dummy, password)
        if row is None or not matched:
            raise INVALID
        token = tokens.new_token()
        try:
            await tokens.store_token(res.storage.cache, token, row["id"], self.settings.token_ttl)
            if mutants.on("auth_leaks_redis_connection"):  # MUTANT: checked out, never released
                pool = res.storage.cache.client.connection_pool
                _MUTANT_KEPT.append(await pool.get_connection("PING"))
        except streams.TRANSIENT_ERRORS as exc:
            raise _unavailable("redis", exc) from None
        if mutants.on("auth_unbounded_audit_log"):  # MUTANT: 256 KiB kept per login
            _MUTANT_KEPT.append(token.encode().ljust(256 * 1024, b"."))
        metrics.AUTH_TOKEN_LATENCY.observe(time.perf_counter() - started)
        return JSONResponse(
            {
                "token": token,
                "token_type": "Bearer",
                "expires_in": self.settings.token_ttl,
                "user_id": str(row["id"]),
            },
            headers={"Cache-Control": "no-store"},
        )


def create_app(settings: Settings) -> Starlette:
    """The auth app: POST /v1/auth/login plus /healthz, /readyz, /metrics."""
    login = _Login(settings)
    log.info(
        "password KDF: %s; %d verification threads",
        passwords.describe(login.hasher),
        settings.kdf_threads,
    )
    return build_app(settings, [Route("/v1/auth/login", login.handle, methods=["POST"])])

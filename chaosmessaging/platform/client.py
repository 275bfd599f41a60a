"""An HTTP client of a platform described by its platform file (asyncio, httpx).

`PlatformClient.call("conversations.create", values, session)` renders the operation of the file
(method, path, body template, how the token is sent), sends it and returns a `Reply` with the
status, what the status means for that operation (ok / forbidden / conflict / not_found /
too_large / unauthorized / other), the values its `extract` JSONPaths pulled out, and the time it
took. Nothing here knows a platform: Matrix and the reference stack differ only in their files.
Passwords come from the caller (the load-test password) and never reach a log or a result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaosmessaging.platform.schema import Operation, Platform
from chaosmessaging.platform.templates import extract, find_one, render, render_request

__all__ = ["PlatformClient", "Reply", "Session", "OUTCOMES"]

#: What a status can mean for an operation, in the order they are looked up.
OUTCOMES = ("ok", "forbidden", "conflict", "not_found", "too_large", "unauthorized")


@dataclass
class Session:
    """One login: a device of `user` (with `each_login_is_a_device`, every login is another)."""

    user: str
    user_id: str
    token: str
    device: str
    logged_in_at: float = 0.0
    elapsed_s: float = 0.0


@dataclass
class Reply:
    where: str
    status: int | None  # None: no answer (connection refused, reset, timeout)
    outcome: str  # one of OUTCOMES, "error" (another status) or "no_answer"
    values: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    elapsed_s: float = 0.0
    error: str = ""
    errcode: str = ""  # the platform's error code when its body has one (Matrix: errcode)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def classify(op: Operation, status: int | None) -> str:
    if status is None:
        return "no_answer"
    for outcome in OUTCOMES:
        if status in getattr(op, outcome):
            return outcome
    return "error"


class PlatformClient:
    """Calls the operations of one platform file over a shared `httpx.AsyncClient`."""

    def __init__(self, platform: Platform, http: httpx.AsyncClient) -> None:
        self.platform = platform
        self.http = http

    def operation(self, where: str) -> Operation:
        op = self.platform.operation(where)
        if op is None:
            raise KeyError(f"the platform file {self.platform.name!r} does not describe {where}")
        return op

    async def call(
        self,
        where: str,
        values: dict[str, Any] | None = None,
        session: Session | None = None,
        timeout: float | None = None,
    ) -> Reply:
        op = self.operation(where)
        values = dict(values or {})
        if session is not None:
            values.setdefault("me", session.user_id)
        request = render_request(
            self.platform, op, values, token=session.token if session else None
        )
        started = time.time()
        t0 = time.perf_counter()
        try:
            answer = await self.http.request(
                request.method,
                request.url,
                params=request.params or None,
                headers=request.headers,
                json=request.json,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            return Reply(
                where,
                None,
                "no_answer",
                started=started,
                elapsed_s=time.perf_counter() - t0,
                error=f"{type(exc).__name__}: {exc}"[:200],
            )
        elapsed = time.perf_counter() - t0
        outcome = classify(op, answer.status_code)
        body: Any = None
        if answer.content:
            try:
                body = answer.json()
            except ValueError:
                body = None
        reply = Reply(where, answer.status_code, outcome, started=started, elapsed_s=elapsed)
        if outcome == "ok" and body is not None:
            reply.values = extract(op, body)
        elif isinstance(body, dict):
            reply.errcode = str(body.get("errcode") or body.get("error") or "")[:80]
        return reply

    async def login(self, n: int, prefix: str, password: str, device: str) -> Session | Reply:
        """Log in as `<prefix>-<n>` (the file's `login.username` template); a Session, or the
        failed Reply. The password is only put in the request body."""
        login = self.platform.login
        user = render(login.username, {"prefix": prefix, "n": n}, "login.username")
        op = login.request
        request = render_request(
            self.platform, op, {"user": user, "password": password, "n": n, "device_id": device}
        )
        started = time.time()
        t0 = time.perf_counter()
        try:
            answer = await self.http.request(
                request.method,
                request.url,
                params=request.params or None,
                headers=request.headers,
                json=request.json,
            )
        except httpx.HTTPError as exc:
            return Reply(
                "login",
                None,
                "no_answer",
                started=started,
                elapsed_s=time.perf_counter() - t0,
                error=type(exc).__name__,
            )
        elapsed = time.perf_counter() - t0
        outcome = classify(op, answer.status_code)
        if outcome != "ok":
            return Reply("login", answer.status_code, outcome, started=started, elapsed_s=elapsed)
        body = answer.json()
        token = find_one(login.token, body)
        user_id = find_one(login.user_id, body) if login.user_id else None
        return Session(
            user=user,
            user_id=str(user_id or user),
            token=str(token),
            device=device,
            logged_in_at=started + elapsed,
            elapsed_s=elapsed,
        )

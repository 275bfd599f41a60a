"""A session with any platform, through its platform file: log in, create and list conversations.

The device fleet (`clients.ws`), the delivery actions and probes call the platform only through
this client, so the platform's contract lives in its file and nowhere else. Every URL passes
the allow-list (`platform.templates.checked_request`) before a socket opens. Tokens stay in
memory; nothing here logs them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
from chaoslib.types import Configuration, Secrets

from chaosmessaging.platform.schema import Operation, Platform
from chaosmessaging.platform.templates import checked_request, extract, find_all, find_one
from chaosmessaging.util import http

__all__ = ["PlatformClient", "PlatformCallFailed", "Session", "login"]


class PlatformCallFailed(RuntimeError):
    """An operation answered a status outside its `ok` list (`status` says which)."""

    def __init__(self, where: str, status: int, body: str) -> None:
        self.where, self.status = where, status
        super().__init__(f"{where} answered HTTP {status}: {body[:200]}")


@dataclass(frozen=True)
class Session:
    user: str
    token: str
    user_id: str | None


class PlatformClient:
    def __init__(
        self,
        platform: Platform,
        configuration: Configuration = None,
        secrets: Secrets = None,
        timeout: float = 10.0,
    ) -> None:
        self.platform = platform
        self.configuration = configuration
        self.secrets = secrets
        self.timeout = timeout

    def call(self, where: str, op: Operation, values: dict, token: str | None) -> httpx.Response:
        """Send operation `op` (named `where` in errors); the reply whatever its status."""
        req = checked_request(
            self.platform, op, values, token, where, self.configuration, self.secrets
        )
        return http().request(
            req.method,
            req.url,
            params=req.params,
            headers=req.headers,
            json=req.json,
            timeout=self.timeout,
        )

    def _ok(self, where: str, op: Operation, values: dict, token: str | None) -> httpx.Response:
        reply = self.call(where, op, values, token)
        if reply.status_code not in op.ok:
            raise PlatformCallFailed(where, reply.status_code, reply.text)
        return reply

    def username(self, prefix: str, n: int) -> str:
        return self.platform.login.username.format(prefix=prefix, n=n)

    def login(self, user: str, password: str, n: int = 0) -> Session:
        """One login (on platforms where each login is a device, one new device)."""
        values = {
            "user": user,
            "password": password,
            "n": n,
            "device_id": f"cm-{uuid.uuid4().hex[:12]}",
        }
        doc = self._ok("login.request", self.platform.login.request, values, None).json()
        token = find_one(self.platform.login.token, doc)
        if token is None:
            raise PlatformCallFailed(f"login (no token at {self.platform.login.token})", 200, "")
        user_id = (
            find_one(self.platform.login.user_id, doc) if self.platform.login.user_id else None
        )
        return Session(user, str(token), None if user_id is None else str(user_id))

    def create_conversation(self, session: Session, title: str, participants: list[str]) -> str:
        """A new conversation created by `session`'s user with `participants` (user ids)."""
        op = self.platform.conversations.create
        values = {"title": title, "participants": participants, "user_id": session.user_id}
        got = extract(op, self._ok("conversations.create", op, values, session.token).json())
        if got.get("id") in (None, ""):
            raise PlatformCallFailed("conversations.create (no id at extract.id)", 0, "")
        return str(got["id"])

    def conversation_ids(self, session: Session) -> frozenset[str]:
        """Every conversation the session's user is in, as the platform lists it (all pages)."""
        op = self.platform.conversations.list
        if op is None:
            raise PlatformCallFailed("conversations.list (not described)", 0, "")
        page, found, cursor = op.page, set(), None
        for _ in range(1000):
            values = {"user_id": session.user_id}
            req_op = op
            query = dict(op.query)
            if page.limit_param:
                query[page.limit_param] = page.limit
            if cursor and page.cursor_param:
                query[page.cursor_param] = cursor
            req_op = op.model_copy(update={"query": query})
            doc = self._ok("conversations.list", req_op, values, session.token).json()
            for item in find_all(page.items, doc):
                ident = find_one(page.id, item) if isinstance(item, dict) else item
                if ident is not None:
                    found.add(_canonical(str(ident)))
            cursor = find_one(page.cursor, doc) if page.cursor else None
            if not cursor or not page.cursor_param:
                break
        return frozenset(found)


def _canonical(ident: str) -> str:
    """UUIDs in one spelling (a platform may answer upper-case or braced ids); others as given."""
    try:
        return str(uuid.UUID(ident))
    except ValueError:
        return ident


def login(auth_url: str, username: str, password: str) -> dict:
    """One login on the reference platform whose login service is at `auth_url` (for tests and
    tools that talk to an embedded stack): ``{"token", "user_id"}``; raises
    `PlatformCallFailed`."""
    from chaosmessaging.platform import load_platform
    from chaosmessaging.resources import bundled

    platform = load_platform(
        bundled("platforms") / "reference.yaml", configuration={"messaging_auth_url": auth_url}
    )
    session = PlatformClient(platform).login(username, password)
    return {"token": session.token, "user_id": session.user_id}

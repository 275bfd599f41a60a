"""The platform file's schema: what the experiments need to know about a messaging platform.

One pydantic model per section; every model forbids unknown keys, so a typo is an error that
names its field path (``conversations.create.ok.0: Input should be a valid integer``) instead of a
setting silently ignored. The file format is documented in ``docs/platforms.md``; this module is
its reference and must stay free of I/O (``loader`` reads files, ``templates`` renders requests).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CacheHeader",
    "Concurrency",
    "Delivery",
    "Evidence",
    "Frame",
    "Login",
    "Operation",
    "Platform",
    "Readiness",
    "SendAs",
    "Service",
    "SseDelivery",
    "SyncDelivery",
    "UpdateOperation",
    "WebSocketDelivery",
]

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _jsonpath(value: str | None) -> str | None:
    if value is not None and not value.startswith("$"):
        raise ValueError(f"a JSONPath starting with '$' (e.g. '$.id'), got {value!r}")
    return value


class Degraded(_Strict):
    """How a readiness answer says which dependency is degraded: `checks` points at an object
    ``{dependency: state}``; a dependency whose state is not `ok_value` is degraded."""

    checks: str = Field(description="JSONPath to the {dependency: state} object, e.g. '$.checks'")
    ok_value: str = "ok"

    _path = field_validator("checks")(_jsonpath)


class Readiness(_Strict):
    path: str
    ready_status: list[int] = [200]
    unavailable_status: list[int] = [503]
    degraded: Degraded | None = None


class Metrics(_Strict):
    path: str = "/metrics"


class CacheHeader(_Strict):
    """A response header that says whether the service answered from its cache of who takes
    part in which conversation (T2 judges the latency of hits and misses apart)."""

    name: str = Field(min_length=1)
    hit: list[str] = Field(min_length=1, description="values that mean: answered from the cache")
    miss: list[str] = Field(min_length=1, description="values that mean: the cache missed")


class Service(_Strict):
    """One network service of the platform (its base URL and the endpoints operators use)."""

    url: str
    readiness: Readiness | None = None
    health: str | None = None  # liveness path, e.g. /healthz
    metrics: Metrics | None = None
    cache_header: CacheHeader | None = None
    # a response header naming the process/instance that answered (T3: an invalidation that
    # crossed processes)
    served_by_header: str | None = Field(None, min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"an http:// or https:// base URL, got {value!r}")
        return value.rstrip("/")


class Operation(_Strict):
    """One HTTP call, as data: method + path (+ query, headers, body template) on a service, the
    statuses that mean success and each failure the experiments tell apart, and JSONPaths that
    pull values (an id, a token, a cursor) out of the reply. Placeholders ``{name}`` in the path,
    query, headers and body are filled at run time (see docs/platforms.md for the names)."""

    service: str = "api"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    query: dict[str, Any] = {}
    headers: dict[str, str] = {}
    body: Any = None
    ok: list[int] = Field(min_length=1)
    forbidden: list[int] = []
    conflict: list[int] = []
    not_found: list[int] = []
    too_large: list[int] = []
    unauthorized: list[int] = [401]
    extract: dict[str, str] = {}
    authenticated: bool = True

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"a path starting with '/', got {value!r}")
        return value

    @field_validator("extract")
    @classmethod
    def _extract(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not path.startswith("$"):
                raise ValueError(f"extract.{name}: a JSONPath starting with '$', got {path!r}")
        return value


def _uses(op: Operation, name: str) -> bool:
    """Whether the operation's templates (path, query, headers, body) use placeholder {name}."""
    text = json.dumps([op.path, op.query, op.headers, op.body])
    return "{" + name + "}" in text


class Concurrency(_Strict):
    """Optimistic concurrency of an update: the request carries the version of the conversation
    the client last read (``{version}``), an older one is refused with a `conflict` status. Where
    a reply gives the version is `extract.version` (of update, and of create or get)."""

    current_version: str | None = Field(
        None, description="JSONPath of the current version in a conflict reply (else: get)"
    )

    _paths = field_validator("current_version")(_jsonpath)


class UpdateOperation(Operation):
    """conversations.update, with its optimistic concurrency when the platform has one."""

    concurrency: Concurrency | None = None

    @model_validator(mode="after")
    def _versions(self) -> UpdateOperation:
        if self.concurrency is not None:
            if not self.conflict:
                raise ValueError(
                    "concurrency is described: list the statuses of a stale update in 'conflict'"
                )
            if not _uses(self, "version"):
                raise ValueError(
                    "concurrency is described: put {version} where the request carries the "
                    "version last read (path, query, headers or body)"
                )
            if "version" not in self.extract:
                raise ValueError(
                    "concurrency is described: extract.version says where a reply gives the "
                    "conversation's new version"
                )
        else:
            if self.conflict:
                raise ValueError(
                    f"conflict {self.conflict} needs 'concurrency' (optimistic concurrency: "
                    "{version} in the request, extract.version); without versions, leave "
                    "conflict out"
                )
            if _uses(self, "version"):
                raise ValueError(
                    "{version} is used but no 'concurrency' says where a reply gives the version"
                )
        return self


class SendAs(_Strict):
    """How a token goes with each request: a header with a format, or a query parameter."""

    header: str | None = None
    format: str = "{token}"
    query: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SendAs:
        if (self.header is None) == (self.query is None):
            raise ValueError("give exactly one of 'header' (with 'format') or 'query'")
        return self


class Login(_Strict):
    """How a device/session gets a token. ``{user}`` and ``{password}`` are filled from the
    load-test users (`messaging_loadtest_prefix`/`_users`/`_password`), never from this file."""

    request: Operation
    token: str = Field(description="JSONPath of the token in the login reply")
    user_id: str | None = None
    send_as: SendAs
    each_login_is_a_device: bool = False
    username: str = "{prefix}-{n}"

    _token = field_validator("token", "user_id")(_jsonpath)


class Paging(_Strict):
    """How to walk a list: items and cursor in each reply, the query parameter that takes it."""

    items: str
    id: str = "$.id"
    cursor: str | None = None
    cursor_param: str | None = None
    limit_param: str | None = None
    limit: int = Field(100, gt=0)
    # optional, relative to one item: its title and the id of the user who created it (T2 tells
    # another user's conversation in a list by them)
    title: str | None = None
    creator: str | None = None

    _paths = field_validator("items", "id", "cursor", "title", "creator")(_jsonpath)


class ListOperation(Operation):
    page: Paging


class Conversations(_Strict):
    create: Operation
    list: ListOperation | None = None
    get: Operation | None = None
    update: UpdateOperation | None = None
    delete: Operation | None = None


class Participants(_Strict):
    add: Operation | None = None
    remove: Operation | None = None
    join: Operation | None = None  # e.g. Matrix: the invited user joins
    list: ListOperation | None = None


class Send(Operation):
    """Posting one message. ``{conversation_id}``, ``{client_msg_id}``, ``{txn_id}`` and
    ``{ciphertext}`` (the payload, encoded per `payload_encoding`) are filled per message."""

    payload_encoding: Literal["base64", "text"] = "base64"
    min_payload_bytes: int | None = Field(None, gt=0)
    max_payload_bytes: int | None = Field(None, gt=0)


class Frame(_Strict):
    """Where each fact of a delivered message is in one frame/event (JSONPaths)."""

    kind: str | None = None
    message_kind: str | None = None
    conversation_id: str | None = None
    id: str
    client_msg_id: str
    payload: str
    payload_encoding: Literal["base64", "text"] = "base64"
    seq: str | None = None
    accepted_at: str | None = None
    accepted_at_unit: Literal["s", "ms"] = "s"  # epoch seconds, or milliseconds (Matrix)
    sender: str | None = None

    _paths = field_validator(
        "kind", "conversation_id", "id", "client_msg_id", "payload", "seq", "accepted_at", "sender"
    )(_jsonpath)

    @model_validator(mode="after")
    def _kind(self) -> Frame:
        if (self.kind is None) != (self.message_kind is None):
            raise ValueError("give 'kind' and 'message_kind' together (or neither)")
        return self


class Resume(_Strict):
    """Reconnect where the device left off: query parameter `query` = the last frame's `from`."""

    query: str
    source: str = Field("$.seq", description="JSONPath of the resume position in a message frame")

    _source = field_validator("source")(_jsonpath)


class WebSocketDelivery(_Strict):
    service: str = "gateway"
    path: str
    auth: SendAs | None = None  # default: login.send_as
    ready_kind: str | None = None  # a frame kind the server sends once the socket is ready
    caught_up_kind: str | None = None  # a frame kind that says a resume is complete
    resume: Resume | None = None
    frame: Frame


class SyncDelivery(_Strict):
    """HTTP long-poll (e.g. Matrix /sync): GET `path` with `since_param` = the last `next_batch`,
    `timeout_param` = how long the server may hold the request; `conversations` points at an object
    {conversation_id: room}, `events` (relative to one room) at its list of events."""

    service: str = "api"
    path: str
    query: dict[str, Any] = {}
    since_param: str
    next_batch: str
    timeout_param: str | None = None
    timeout_ms: int = Field(30000, ge=0)
    conversations: str
    events: str
    frame: Frame

    _paths = field_validator("next_batch", "conversations", "events")(_jsonpath)


class SseDelivery(_Strict):
    service: str = "api"
    path: str
    event: str | None = None  # the SSE event name of a message (None: every event)
    resume_header: str | None = "Last-Event-ID"
    frame: Frame


class Delivery(_Strict):
    type: Literal["websocket", "sync", "sse"]
    websocket: WebSocketDelivery | None = None
    sync: SyncDelivery | None = None
    sse: SseDelivery | None = None

    @model_validator(mode="after")
    def _matching(self) -> Delivery:
        if getattr(self, self.type) is None:
            raise ValueError(f"type is {self.type!r}: describe it under '{self.type}'")
        others = [t for t in ("websocket", "sync", "sse") if t != self.type and getattr(self, t)]
        if others:
            raise ValueError(f"type is {self.type!r} but {others[0]!r} is described too")
        return self

    @property
    def channel(self) -> WebSocketDelivery | SyncDelivery | SseDelivery:
        return getattr(self, self.type)


class SqlEvidence(_Strict):
    """A server-side ledger in SQL. `schema` names the query set the ledger probes run
    (``msgstack``: the reference stack's messages/deliveries/outbox tables)."""

    dsn: str
    schema_: Literal["msgstack"] = Field("msgstack", alias="schema")


class Evidence(_Strict):
    """Optional server-side evidence, beyond client-side accounting: SQL, or a Python hook
    ``module:function(platform, run_id, configuration, secrets) -> dict``."""

    sql: SqlEvidence | None = None
    hook: str | None = None

    @field_validator("hook")
    @classmethod
    def _hook(cls, value: str | None) -> str | None:
        if value is not None and (":" not in value or value.startswith(":")):
            raise ValueError(f"'module:function', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> Evidence:
        if (self.sql is None) == (self.hook is None):
            raise ValueError("give exactly one of 'sql' or 'hook'")
        return self


class Platform(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    services: dict[str, Service] = Field(min_length=1)
    login: Login
    conversations: Conversations
    participants: Participants = Participants()
    send: Send
    delivery: Delivery | None = None
    metrics: dict[str, str | None] = {}
    endpoints: dict[str, Operation] = {}  # platform-specific extras (e.g. T7's storage events)
    evidence: Evidence | None = None

    @model_validator(mode="after")
    def _services_exist(self) -> Platform:
        known = set(self.services)
        for where, op in self.operations().items():
            if op.service not in known:
                raise ValueError(
                    f"{where}.service: {op.service!r} is not one of services "
                    f"({', '.join(sorted(known))})"
                )
        if self.delivery is not None and self.delivery.channel.service not in known:
            raise ValueError(
                f"delivery.{self.delivery.type}.service: {self.delivery.channel.service!r} is "
                f"not one of services ({', '.join(sorted(known))})"
            )
        return self

    @model_validator(mode="after")
    def _initial_version(self) -> Platform:
        update, c = self.conversations.update, self.conversations
        if update is not None and update.concurrency is not None:
            if not any(op is not None and "version" in op.extract for op in (c.create, c.get)):
                raise ValueError(
                    "conversations.update.concurrency: conversations.create or conversations.get "
                    "must extract 'version' (the version a client starts from)"
                )
        return self

    def operations(self) -> dict[str, Operation]:
        """Every operation the file describes, by its dotted place (``conversations.create``)."""
        out: dict[str, Operation] = {"login.request": self.login.request, "send": self.send}
        for section in ("conversations", "participants"):
            for name, op in getattr(self, section):
                if op is not None:
                    out[f"{section}.{name}"] = op
        for name, op in self.endpoints.items():
            out[f"endpoints.{name}"] = op
        return out

    def operation(self, where: str) -> Operation | None:
        return self.operations().get(where)

    def metric(self, role: str) -> str | None:
        """The platform's name for metric `role` (the reference stack's metric name); None when
        the platform file maps it to null or leaves it out (criteria on it are "n/a")."""
        return self.metrics.get(role)

"""The `sync` delivery driver: one device receives its messages by HTTP long-poll (Matrix /sync).

A `SyncDevice` loops: GET the file's `delivery.sync.path` with `since_param` = the last
`next_batch` (none on the first request: the initial sync, whose events are history and only set
the position) and `timeout_param` = how long the server may hold the request. In each answer,
`conversations` selects one or more ``{conversation_id: room}`` objects (Matrix:
``$.rooms["join","leave"]``) and `events` (relative to one room) its
events; every event whose `frame.kind` is the message kind is recorded as a `Received` (which
conversation, the platform's id, the client id the sender put in, payload length and SHA-256 of
the decoded bytes, the receive time). A request that fails (no answer or a status other than
200) is a dropped session, kept with its time and status; the device then polls again from the
same position, so a message is never skipped by the driver itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaosmessaging.platform.client import Session
from chaosmessaging.platform.schema import Frame, Platform, SyncDelivery
from chaosmessaging.platform.templates import find_all, find_one, render

__all__ = ["Received", "SyncDevice", "decode_payload"]


@dataclass
class Received:
    device: str
    user: str
    conversation_id: str
    id: str
    client_msg_id: str | None
    size: int | None
    sha256: str | None
    received_at: float
    initial: bool = False  # came with the initial sync (history, before this device's start)


@dataclass
class Dropped:
    at: float
    status: int | None
    error: str


def decode_payload(value: Any, encoding: str) -> bytes | None:
    if not isinstance(value, str):
        return None
    if encoding == "text":
        return value.encode()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _frame_facts(frame: Frame, event: dict) -> tuple[str | None, str | None, bytes | None] | None:
    """(id, client_msg_id, payload bytes) of a message event, None for another kind of event."""
    if frame.kind is not None and find_one(frame.kind, event) != frame.message_kind:
        return None
    msg_id = find_one(frame.id, event)
    client_id = find_one(frame.client_msg_id, event)
    payload = decode_payload(find_one(frame.payload, event), frame.payload_encoding)
    return (
        None if msg_id is None else str(msg_id),
        None if client_id is None else str(client_id),
        payload,
    )


@dataclass
class SyncDevice:
    platform: Platform
    session: Session
    http: httpx.AsyncClient
    received: list[Received] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    requests: int = 0
    gaps: int = 0  # answers saying events were left out (Matrix: timeline.limited)
    since: str | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # called with (conversation_id, event, received_at, initial) for every message event
    on_message: Callable[[str, dict, float, bool], None] | None = None

    @property
    def channel(self) -> SyncDelivery:
        delivery = self.platform.delivery
        if delivery is None or delivery.type != "sync" or delivery.sync is None:
            raise ValueError(f"platform {self.platform.name!r} does not deliver by sync")
        return delivery.sync

    def _request(self, timeout_ms: int) -> tuple[str, dict, dict]:
        sync = self.channel
        values = {"me": self.session.user_id, "device": self.session.device}
        params = render(sync.query, values, "delivery.sync.query")
        params = {k: v if isinstance(v, str | int | float) else _json(v) for k, v in params.items()}
        if self.since is not None:
            params[sync.since_param] = self.since
        if sync.timeout_param is not None:
            params[sync.timeout_param] = timeout_ms
        headers: dict[str, str] = {}
        send_as = self.platform.login.send_as
        if send_as.header:
            headers[send_as.header] = send_as.format.replace("{token}", self.session.token)
        else:
            params[send_as.query] = self.session.token
        url = self.platform.services[sync.service].url + sync.path
        return url, params, headers

    async def poll_once(self, timeout_ms: int | None = None) -> bool:
        """One sync request; True if it was answered 200 and its events recorded."""
        sync = self.channel
        initial = self.since is None
        wait_ms = 0 if initial else (sync.timeout_ms if timeout_ms is None else timeout_ms)
        url, params, headers = self._request(wait_ms)
        self.requests += 1
        try:
            answer = await self.http.get(
                url, params=params, headers=headers, timeout=wait_ms / 1000 + 30
            )
        except httpx.HTTPError as exc:
            self.dropped.append(Dropped(time.time(), None, f"{type(exc).__name__}: {exc}"[:160]))
            return False
        if answer.status_code != 200:
            self.dropped.append(Dropped(time.time(), answer.status_code, answer.text[:160]))
            return False
        now = time.time()
        body = answer.json()
        self._record(body, now, initial)
        self.since = str(find_one(sync.next_batch, body))
        return True

    def _record(self, body: dict, now: float, initial: bool) -> None:
        sync = self.channel
        frame = sync.frame
        # every object `conversations` selects (Matrix: joined rooms, and rooms just left, whose
        # timeline runs up to the leave/kick)
        pairs = [
            (cid, room)
            for rooms in find_all(sync.conversations, body)
            if isinstance(rooms, dict)
            for cid, room in rooms.items()
        ]
        for conversation_id, room in pairs:
            if isinstance(room, dict) and (room.get("timeline") or {}).get("limited"):
                self.gaps += 0 if initial else 1
            for event in find_all(sync.events, room):
                facts = _frame_facts(frame, event) if isinstance(event, dict) else None
                if facts is None:
                    continue
                if self.on_message is not None:
                    self.on_message(str(conversation_id), event, now, initial)
                msg_id, client_id, payload = facts
                self.received.append(
                    Received(
                        device=self.session.device,
                        user=self.session.user,
                        conversation_id=str(conversation_id),
                        id=str(msg_id),
                        client_msg_id=client_id,
                        size=None if payload is None else len(payload),
                        sha256=None if payload is None else hashlib.sha256(payload).hexdigest(),
                        received_at=now,
                        initial=initial,
                    )
                )

    async def run(self, stop: asyncio.Event, retry_s: float = 0.5) -> None:
        """Poll until `stop` is set: the initial sync first (sets `started`), then long-polls."""
        while not stop.is_set():
            ok = await self.poll_once()
            if ok and not self.started.is_set():
                self.started.set()
            if not ok:
                try:
                    await asyncio.wait_for(stop.wait(), retry_s)
                except TimeoutError:
                    pass


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))

"""Delivery drivers: how a device receives messages on a platform's delivery channel.

A driver keeps one device connected (and resumed after any break) and turns whatever the channel
carries into *normalized message records* (`normalize`): ``{"message_id", "conversation_id",
"client_msg_id", "payload" (bytes or None), "seq", "accepted_at"}``. The fleet (`clients.ws.Fleet`)
does the accounting on those records, whatever the channel.

- ``websocket``: built in (`clients.ws.Fleet` runs it), frame mapping from the platform file.
- ``sync`` (HTTP long-poll, e.g. Matrix /sync) and ``sse``: a driver registers itself with
  `register(type, run_device)` where ``async run_device(fleet, device)`` loops until the fleet
  stops, calling ``fleet.record_message(device, record, received_at)`` per message and
  ``fleet.record_event(device, kind, **facts)`` for opens, closes, errors and reconnects.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from chaosmessaging.platform.schema import Frame
from chaosmessaging.platform.templates import find_one

__all__ = ["DRIVERS", "has_driver", "normalize", "register", "runner_for"]

RunDevice = Callable[[Any, Any], Awaitable[None]]
DRIVERS: dict[str, RunDevice] = {}


def register(kind: str, run_device: RunDevice) -> None:
    """Make delivery type `kind` available to the fleet."""
    DRIVERS[kind] = run_device


def has_driver(kind: str) -> bool:
    return kind == "websocket" or kind in DRIVERS or _import_builtin(kind)


def runner_for(kind: str) -> RunDevice | None:
    """The registered driver of `kind` (None for websocket: the fleet's own loop)."""
    if kind == "websocket":
        return None
    _import_builtin(kind)
    if kind not in DRIVERS:
        raise LookupError(
            f"no delivery driver for {kind!r} (known: websocket, {', '.join(DRIVERS)})"
        )
    return DRIVERS[kind]


def _import_builtin(kind: str) -> bool:
    """Drivers shipped as `chaosmessaging.clients.delivery_<kind>` register on import."""
    if kind in DRIVERS:
        return True
    try:
        __import__(f"chaosmessaging.clients.delivery_{kind}")
    except ModuleNotFoundError:
        return False
    return kind in DRIVERS


def is_message(frame: Frame, doc: Any) -> bool:
    return frame.kind is None or find_one(frame.kind, doc) == frame.message_kind


def normalize(frame: Frame, doc: Any) -> dict:
    """The message record of one delivered frame/event `doc` (see the module docstring)."""
    raw = find_one(frame.payload, doc)
    payload: bytes | None = None
    if isinstance(raw, str):
        if frame.payload_encoding == "base64":
            try:
                payload = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                payload = None
        else:
            payload = raw.encode()

    def field(path: str | None) -> Any:
        return None if path is None else find_one(path, doc)

    accepted = field(frame.accepted_at)
    return {
        "message_id": field(frame.id),
        "conversation_id": field(frame.conversation_id),
        "client_msg_id": field(frame.client_msg_id),
        "payload": payload,
        "seq": field(frame.seq),
        "accepted_at": (
            (accepted / 1000 if frame.accepted_at_unit == "ms" else accepted)
            if isinstance(accepted, int | float) and not isinstance(accepted, bool)
            else None
        ),
    }

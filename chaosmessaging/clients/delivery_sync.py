"""The `sync` delivery driver of the device fleet (`clients.drivers`): HTTP long-poll, e.g. Matrix.

Registers ``sync`` with `clients.drivers.register`; the fleet (`clients.ws.Fleet`) then runs
`run_device` for each device instead of its WebSocket loop. The polling itself is
`chaosmessaging.platform.sync.SyncDevice` (the file's `delivery.sync`: path, since/next_batch,
long-poll timeout, where rooms and their events are); each message event of an incremental
answer becomes a normalized record (`drivers.normalize`, with the room as conversation when the
event does not carry one) handed to ``fleet.record_message``. The initial sync (history before the
device started) only sets the position. Connection events for the fleet's accounting: ``open``
once the initial sync answered; a failed poll (no answer, or a status other than 200) is a
``close`` by the ``server`` (a status) or the ``network`` (no answer), and the next answered poll
a ``reconnect`` with the seconds in between, so "zero disconnects" means zero failed polls.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from chaosmessaging.clients.drivers import normalize, register
from chaosmessaging.platform.client import Session
from chaosmessaging.platform.sync import SyncDevice

__all__ = ["run_device"]


async def run_device(fleet, d) -> None:
    """Keep device `d` of `fleet` polling until the fleet stops."""
    platform = fleet.platform
    frame = platform.delivery.sync.frame
    session = Session(user=d.user, user_id=d.user, token=d.token, device=d.name)

    def on_message(conversation_id: str, event: dict, received: float, initial: bool) -> None:
        if initial:
            return
        record = normalize(frame, event)
        record["conversation_id"] = record.get("conversation_id") or conversation_id
        fleet.record_message(d, record, received)

    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http:
        device = SyncDevice(platform, session, http, on_message=on_message)
        lost_at: float | None = None
        while not fleet.stopping.is_set():
            before = len(device.dropped)
            ok = await device.poll_once()
            now = time.time()
            if ok:
                if not d.connected.is_set():
                    d.online = True
                    fleet.record_event(d, "open", t=now)
                    d.connected.set()
                elif lost_at is not None:
                    fleet.record_event(d, "reconnect", t=now, seconds=round(now - lost_at, 3))
                lost_at = None
                continue
            failure = device.dropped[before] if len(device.dropped) > before else None
            if lost_at is None:
                lost_at = now
                by = "network" if failure is None or failure.status is None else "server"
                fleet.record_event(
                    d,
                    "close",
                    t=now,
                    by=by,
                    code=None if failure is None else failure.status,
                    reason="" if failure is None else failure.error[:120],
                )
            try:
                await asyncio.wait_for(fleet.stopping.wait(), 0.5)
            except TimeoutError:
                pass


register("sync", run_device)

"""The engine behind `actions.websocket.start_clients`: users, conversations and their devices.

Logs the load-test users in, creates conversations among them (participants chosen round-robin;
on platforms whose added users must accept, each one joins), asks the platform which
conversations each user is in (the truth a device checks every message against), and starts a
`clients.ws.Fleet` of devices on the platform's delivery channel. Everything goes through the
platform file (`clients.platform.PlatformClient`); tokens stay in memory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging import runs
from chaosmessaging.clients.platform import PlatformCallFailed, PlatformClient, Session
from chaosmessaging.clients.ws import Device, Fleet, frames_path, ws_url
from chaosmessaging.platform.schema import Platform
from chaosmessaging.platform.templates import service_address
from chaosmessaging.util import stack_home

__all__ = ["FleetPlan", "start_fleet"]


@dataclass(frozen=True)
class FleetPlan:
    users: int
    devices_per_user: int
    conversations: int
    participants: int
    label: str
    connect_timeout_s: float
    ping_interval_s: float | None
    prefix: str
    # the last `slow_devices` devices are slow readers (pause `stall_for_s` after `stall_after_s`)
    slow_devices: int = 0
    stall_after_s: float = 5.0
    stall_for_s: float = 8.0


def _login(client: PlatformClient, user: str, password: str, n: int) -> Session:
    try:
        return client.login(user, password, n)
    except PlatformCallFailed as exc:
        raise ActivityFailed(
            f"login as {user} failed: {exc} — are the load-test users seeded with this password?"
        ) from None
    except httpx.HTTPError as exc:
        raise ActivityFailed(f"cannot reach the platform's login service: {exc}") from None


def _conversations(
    client: PlatformClient, plan: FleetPlan, names: list[str], sessions: dict[str, Session]
) -> list[dict]:
    people = client.platform.participants
    # a create that takes no participant list: add (invite) each one, as the creator
    takes_list = "{participants}" in json.dumps(client.platform.conversations.create.body)
    add = None if takes_list else people.add
    created = []
    for j in range(plan.conversations):
        first = j * plan.participants
        members = [names[(first + k) % plan.users] for k in range(plan.participants)]
        others = [sessions[m].user_id for m in members[1:]]
        try:
            creator = sessions[members[0]]
            cid = client.create_conversation(creator, f"{plan.label}-{j}", others)
            for member in members[1:]:
                values = {"conversation_id": cid, "user_id": sessions[member].user_id}
                for where, op, session in (
                    ("participants.add", add, creator),
                    ("participants.join", people.join, sessions[member]),
                ):
                    if op is None:
                        continue
                    reply = client.call(where, op, values, session.token)
                    if reply.status_code not in op.ok:
                        raise PlatformCallFailed(where, reply.status_code, reply.text)
        except (PlatformCallFailed, httpx.HTTPError) as exc:
            raise ActivityFailed(f"creating conversation {j} failed: {exc}") from None
        created.append({"id": cid, "members": members})
    return created


def _memberships(
    client: PlatformClient, names: list[str], sessions: dict[str, Session], created: list[dict]
) -> dict[str, frozenset[str]]:
    """Each user's conversations as the platform lists them to that user; without a list
    operation, the run's own record of who is in what."""
    if client.platform.conversations.list is None:
        return {n: frozenset(c["id"] for c in created if n in c["members"]) for n in names}
    try:
        return {n: client.conversation_ids(sessions[n]) for n in names}
    except (PlatformCallFailed, httpx.HTTPError) as exc:
        raise ActivityFailed(f"listing a user's conversations failed: {exc}") from None


def start_fleet(
    platform: Platform,
    plan: FleetPlan,
    password: str,
    home: str | None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> tuple[Fleet, dict]:
    """Log in, create the conversations, connect every device; (the running fleet, the run fact
    ``ws:<label>`` to record). Raises `ActivityFailed` naming what failed."""
    if platform.delivery is None:
        raise ActivityFailed(
            f"the platform file of {platform.name!r} describes no delivery channel (delivery:)"
        )
    client = PlatformClient(platform, configuration, secrets)
    channel = platform.delivery.channel
    url = platform.services[channel.service].url
    base = service_address(channel.service, url, configuration, secrets)
    names = [client.username(plan.prefix, i) for i in range(plan.users)]
    sessions = {name: _login(client, name, password, i) for i, name in enumerate(names)}
    created = _conversations(client, plan, names, sessions)
    mine = _memberships(client, names, sessions, created)

    per_device = platform.login.each_login_is_a_device
    devices = []
    for i, name in enumerate(names):
        for n in range(plan.devices_per_user):
            session = _login(client, name, password, i) if per_device and n else sessions[name]
            devices.append(
                Device(user=name, number=n, token=session.token, conversations=mine[name])
            )
    count = min(plan.slow_devices, len(devices))
    slow = devices[len(devices) - count :] if count else []
    for device in slow:
        device.stall_after_s, device.stall_for_s = plan.stall_after_s, plan.stall_for_s

    convo_file = (
        stack_home(home) / "runs" / (f"{runs.current_run_id(home)}.conversations-{plan.label}.json")
    )
    convo_file.parent.mkdir(parents=True, exist_ok=True)
    convo_file.write_text(
        json.dumps(
            [{"id": c["id"], "poster": c["members"][0], "members": c["members"]} for c in created]
        )
    )
    path: Path = frames_path(plan.label, home)
    path.unlink(missing_ok=True)

    def relogin(user: str) -> str:
        return client.login(user, password, names.index(user)).token

    websocket = platform.delivery.websocket
    fleet = Fleet(
        ws_url(base, websocket.path) if websocket else base,
        devices,
        path,
        login=relogin,
        ping_interval=float(plan.ping_interval_s) if plan.ping_interval_s else None,
        channel=websocket,
        send_as=platform.login.send_as,
        delivery=platform.delivery.type,
        platform=platform,
    )
    started = time.time()
    try:
        fleet.start(float(plan.connect_timeout_s))
    except TimeoutError as exc:
        raise ActivityFailed(f"devices could not connect to {base}: {exc}") from None
    fact = {
        "label": plan.label,
        "platform": platform.name,
        "delivery": platform.delivery.type,
        "users": names,
        "devices_per_user": plan.devices_per_user,
        "conversations": created,
        "frames_path": str(path),
        "conversations_path": str(convo_file),
        "started_at": started,
        "connected_at": time.time(),
        "gateway_url": base,
        "slow_devices": [d.name for d in slow],
    }
    return fleet, fact

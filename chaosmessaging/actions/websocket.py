"""WebSocket devices that record every frame, and the message load that feeds them.

`start_clients` logs the seeded load-test users in, creates conversations among them through the
API (participants chosen round-robin), connects every user's devices to the gateway and returns
once each device got the gateway's hello; the devices keep running in a background thread
(`chaosmessaging.clients.ws.Fleet`), reconnect with resume after any close, and write every frame
they receive to ``<home>/runs/<run id>.frames-<label>.jsonl``. `start_conversation_load` starts
k6 (k6/delivery_load.js, through `actions.load.start_load`) posting into those conversations as
their participants, each client message id ending in the payload's SHA-256 prefix so devices
check the bytes end to end. `stop_clients` lets the last frames arrive, closes every socket with
1000 and records a summary; the verdict is `chaosmessaging.probes.delivery.websocket_delivery`.

The run fact ``ws:<label>`` holds the conversations and their members (usernames), the devices per
user and the files, so the verdict knows which device had to receive which message. Nothing
secret is recorded: tokens stay in memory and the password is only sent to the auth service.
"""

from __future__ import annotations

import threading
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.actions.load import start_load
from chaosmessaging.clients.devices import FleetPlan, start_fleet
from chaosmessaging.clients.ws import Fleet
from chaosmessaging.config import lookup
from chaosmessaging.platform import Platform, PlatformError, load_platform
from chaosmessaging.util import home_of

__all__ = ["start_clients", "stop_clients", "start_conversation_load"]

# label -> running fleet, in this (the chaos) process
_FLEETS: dict[str, Fleet] = {}
MAX_DEVICES = 5000


def _label_ok(label: str) -> str:
    if not label or not all(c.isalnum() or c in "_.-" for c in label):
        raise ActivityFailed(f"label {label!r} must be letters, digits, '_', '.' or '-'")
    return label


def _limits_start_clients(
    arguments: dict, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    """The fleet's caps, checked before the steady state (start_clients refuses the same)."""
    try:
        users = int(arguments.get("users", 2))
        devices = int(arguments.get("devices_per_user", 1))
        participants = int(arguments.get("participants", 2))
    except (TypeError, ValueError):
        return []  # the type check names it
    errors = []
    if users * devices > MAX_DEVICES:
        errors.append(
            f"users={users} x devices_per_user={devices} = {users * devices} devices is over "
            f"the fleet's cap of {MAX_DEVICES}"
        )
    if participants > users:
        errors.append(f"participants={participants} is more than users={users}")
    try:
        slow = int(arguments.get("slow_devices") or 0)
    except (TypeError, ValueError):
        return errors
    if slow and slow >= users * devices:
        # a slow reader's latency is not judged: with every device slow, the delivery p95
        # criterion would pass on no evidence at all
        errors.append(
            f"slow_devices={slow} leaves no device of the {users * devices} whose delivery "
            "latency can be judged; keep it below users x devices_per_user"
        )
    return errors


def _preflight_start_clients(
    arguments: dict, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    """What depends on the platform this run targets: enough seeded load-test users."""
    seeded = lookup("messaging_loadtest_users", configuration, secrets)
    try:
        users = int(arguments.get("users", 2))
    except (TypeError, ValueError):
        return []
    if str(seeded).strip().isdigit() and users > int(seeded):
        return [
            f"users={users} but only {seeded} load-test users are seeded: start the stack with "
            f"CHAOSMESSAGING_LOADTEST_USERS={users} or more (messaging_loadtest_users)"
        ]
    return []


#: activity -> the check of its values against its real limits (validation control)
LIMITS = {"start_clients": _limits_start_clients}
#: activity -> the check against the platform the run targets (validation control, at run start)
PREFLIGHT = {"start_clients": _preflight_start_clients}


def start_clients(
    users: int = 2,
    devices_per_user: int = 1,
    conversations: int = 1,
    participants: int = 2,
    label: str = "ws",
    connect_timeout_s: float = 60.0,
    max_duration_s: float = 3600.0,
    ping_interval_s: float = None,
    slow_devices: int = 0,
    stall_after_s: float = 5.0,
    stall_for_s: float = 8.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Log in `users` load-test users (`<prefix>-0` ..), create `conversations` conversations of
    `participants` users each (round-robin over the users), connect `devices_per_user` devices
    per user to the platform's delivery channel (the platform file's `delivery:`; reference: the
    gateway's WebSocket) and return once all are connected (reference: got the hello). The
    devices then record every message (conversation membership as the platform lists it to the
    user, payload hash, accepted -> received latency) until `stop_clients` (or
    `max_duration_s`), reconnecting with resume after any close. `ping_interval_s` makes the
    devices ping too (default: answer the server's pings only). The last `slow_devices`
    devices are slow readers: each stops reading for `stall_for_s` seconds, `stall_after_s`
    after the devices started, through a small client queue so the server's send path feels
    it. Returns the devices, conversations and the frames file.
    """
    label = _label_ok(label)
    users, devices_per_user = int(users), int(devices_per_user)
    conversations, participants = int(conversations), int(participants)
    if users < 1 or devices_per_user < 1 or conversations < 1 or participants < 1:
        raise ActivityFailed("users, devices_per_user, conversations and participants must be >= 1")
    if participants > users:
        raise ActivityFailed(
            f"participants={participants} is more than users={users}: a "
            "conversation cannot have more distinct members than there are users"
        )
    if users * devices_per_user > MAX_DEVICES:
        raise ActivityFailed(f"{users * devices_per_user} devices is over {MAX_DEVICES}")
    seeded = int(lookup("messaging_loadtest_users", configuration, secrets))
    if users > seeded:
        raise ActivityFailed(
            f"users={users} but only {seeded} load-test users are seeded: start "
            f"the stack with CHAOSMESSAGING_LOADTEST_USERS={users} or more"
        )
    if label in _FLEETS:
        raise ActivityFailed(f"clients labelled {label!r} are already running: stop_clients first")
    plan = FleetPlan(
        users=users,
        devices_per_user=devices_per_user,
        conversations=conversations,
        participants=participants,
        label=label,
        connect_timeout_s=float(connect_timeout_s),
        ping_interval_s=float(ping_interval_s) if ping_interval_s else None,
        prefix=str(lookup("messaging_loadtest_prefix", configuration, secrets)),
        slow_devices=int(slow_devices or 0),
        stall_after_s=float(stall_after_s),
        stall_for_s=float(stall_for_s),
    )
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    platform = _platform(configuration, secrets)
    home = home_of(configuration)
    fleet, fact = start_fleet(platform, plan, password, home, configuration, secrets)
    _FLEETS[label] = fleet
    timer = threading.Timer(float(max_duration_s), fleet.stop)
    timer.daemon = True
    timer.start()
    runs.record(f"ws:{label}", fact, home=home)
    connect_s = fact["connected_at"] - fact["started_at"]
    logger.info(
        f"{len(fleet.devices)} devices of {users} users connected to {fact['gateway_url']} "
        f"({platform.name}, {fact['delivery']}) in {connect_s:.1f}s; {conversations} "
        f"conversations; frames -> {fact['frames_path']}"
    )
    return {
        "devices": len(fleet.devices),
        "users": users,
        "conversations": len(fact["conversations"]),
        "frames_path": fact["frames_path"],
        "conversations_path": fact["conversations_path"],
        "connect_seconds": round(connect_s, 3),
    }


def _platform(configuration: Configuration, secrets: Secrets) -> Platform:
    try:
        return load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None


def stop_clients(
    label: str = "ws",
    settle_s: float = 5.0,
    quiet_s: float = 1.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Let the last frames arrive (up to `settle_s` seconds, ending early once every device is
    connected and caught up (resume done) and no frame arrived for `quiet_s` seconds), close
    every device of `label` with 1000 and record a summary fact (``ws:<label>:summary``).
    Returns devices, frames, closes and the frames file.
    """
    fleet = _FLEETS.pop(_label_ok(label), None)
    if fleet is None:
        raise ActivityFailed(
            f"no WebSocket clients labelled {label!r} run in this process: start_clients first"
        )
    deadline = time.monotonic() + float(settle_s)
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline and not fleet.done.is_set():
        count = sum(d.frames for d in fleet.devices)
        online = all(d.online and d.caught_up for d in fleet.devices)
        if count != last or not online:  # a device still reconnecting may have frames to come
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change >= float(quiet_s):
            break
        time.sleep(0.2)
    fleet.stop(15.0)
    summary = fleet.summary()
    runs.record(f"ws:{label}:summary", summary, home=home_of(configuration))
    logger.info(
        f"WebSocket devices {label!r} stopped: {summary['frames']} frames, "
        f"{summary['closes']} closes"
    )
    return summary


def start_conversation_load(
    label: str = "ws",
    rate: int = 10,
    duration: str = "20s",
    payload_bytes: int = 1024,
    vus: int = None,
    max_vus: int = None,
    load_label: str = "load",
    p95_ms: float = None,
    max_error_rate: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Start k6 (k6/delivery_load.js) posting `rate` messages per second for `duration` into the
    conversations `start_clients` created for `label`, each as one of its members, with
    `payload_bytes` random bytes whose SHA-256 prefix ends the client message id. Runs in the
    background like `actions.load.start_load` (same `load_label` facts, thresholds from `p95_ms`
    and `max_error_rate`); returns its pid, run id and summary path.
    """
    fact = runs.fact(f"ws:{_label_ok(label)}", home=home_of(configuration))
    if not fact:
        raise ActivityFailed(f"no conversations for clients {label!r}: run start_clients first")
    env = {
        "CONVERSATIONS_FILE": fact["conversations_path"],
        "PAYLOAD_BYTES": int(payload_bytes),
        "LOGIN_SESSIONS": len({c["members"][0] for c in fact["conversations"]}),
    }
    if p95_ms is not None:
        env["P95_MS"] = p95_ms
    if max_error_rate is not None:
        env["MAX_ERROR_RATE"] = max_error_rate
    return start_load(
        script="delivery_load.js",
        rate=rate,
        duration=duration,
        vus=vus,
        max_vus=max_vus,
        env=env,
        label=load_label,
        configuration=configuration,
        secrets=secrets,
    )

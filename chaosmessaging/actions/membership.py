"""Membership changes while WebSocket devices stay connected (plan tests 3 and 12).

`remove_participants` removes one participant (not the conversation's poster) from some of the
conversations `chaosmessaging.actions.websocket.start_clients` created, through the API, while the
removed users' devices stay connected, and records each acknowledged removal as the run fact
``removed:<label>`` (conversation, user, when the API acknowledged it). The delivery verdict
(`chaosmessaging.probes.delivery.websocket_delivery`) then counts a frame of that conversation on
the removed user's already-open devices as leakage when its message was accepted after the
removal plus the invalidation budget, and stops expecting such messages there.
"""

from __future__ import annotations

import time

import httpx
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.clients.platform import PlatformCallFailed, PlatformClient
from chaosmessaging.config import lookup
from chaosmessaging.platform import PlatformError, load_platform
from chaosmessaging.util import home_of

__all__ = ["remove_participants"]


def remove_participants(
    label: str = "ws",
    conversations: int = 1,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Remove the last participant of each of the first `conversations` conversations of the
    WebSocket clients `label` (its poster stays), as the poster, through the platform file's
    `participants.remove` (reference: `DELETE /v1/conversations/{id}/participants/{user_id}`);
    the removed users' devices stay connected.
    Records the run fact ``removed:<label>``: [{"conversation", "user", "at"}] (`at`: epoch
    seconds when the API acknowledged the removal). Returns it.
    """
    home = home_of(configuration)
    fleet = runs.fact(f"ws:{label}", home=home)
    if not fleet:
        raise ActivityFailed(f"no WebSocket clients labelled {label!r}: start_clients first")
    chosen = [c for c in fleet["conversations"] if len(c["members"]) >= 2][: int(conversations)]
    if len(chosen) < int(conversations):
        raise ActivityFailed(
            f"only {len(chosen)} conversations of {label!r} have a participant besides the "
            f"poster; {conversations} removals asked"
        )
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    try:
        platform = load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None
    op = platform.participants.remove if platform.participants else None
    if op is None:
        raise ActivityFailed(
            f"the platform file of {platform.name!r} describes no participants.remove: "
            "this activity cannot run on it"
        )
    client = PlatformClient(platform, configuration, secrets)
    users = list(fleet["users"])
    removed = list(runs.fact(f"removed:{label}", default=[], home=home))
    for conversation in chosen:
        poster, user = conversation["members"][0], conversation["members"][-1]
        try:
            token = client.login(poster, password, users.index(poster)).token
            user_id = client.login(user, password, users.index(user)).user_id
            values = {"conversation_id": conversation["id"], "user_id": user_id}
            reply = client.call("participants.remove", op, values, token)
        except (PlatformCallFailed, httpx.HTTPError) as exc:
            raise ActivityFailed(f"removing {user} from {conversation['id']}: {exc}") from None
        if reply.status_code not in op.ok:
            raise ActivityFailed(
                f"removing {user} from {conversation['id']} answered HTTP {reply.status_code}: "
                f"{reply.text[:200]}"
            )
        removed.append({"conversation": conversation["id"], "user": user, "at": time.time()})
        runs.record(f"removed:{label}", removed, home=home)
        logger.info(f"removed {user} from conversation {conversation['id']} (devices stay open)")
    return {"label": label, "removed": removed}

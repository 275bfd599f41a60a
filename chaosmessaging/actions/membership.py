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

from chaosmessaging import runs, targets
from chaosmessaging.clients.ws import login
from chaosmessaging.config import lookup
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
    WebSocket clients `label` (its poster stays), as the poster, through `DELETE
    /v1/conversations/{id}/participants/{user_id}`; the removed users' devices stay connected.
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
    auth = targets.check(
        str(lookup("messaging_auth_url", configuration, secrets)),
        "messaging_auth_url",
        configuration,
        secrets,
    )
    api = targets.check(
        str(lookup("messaging_api_url", configuration, secrets)),
        "messaging_api_url",
        configuration,
        secrets,
    )
    removed = list(runs.fact(f"removed:{label}", default=[], home=home))
    for conversation in chosen:
        poster, user = conversation["members"][0], conversation["members"][-1]
        try:
            token = login(auth, poster, password)["token"]
            user_id = login(auth, user, password)["user_id"]
            r = httpx.delete(
                f"{api.rstrip('/')}/v1/conversations/{conversation['id']}/participants/{user_id}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            raise ActivityFailed(f"removing {user} from {conversation['id']}: {exc}") from None
        if r.status_code != 200:
            raise ActivityFailed(
                f"removing {user} from {conversation['id']} answered HTTP {r.status_code}: "
                f"{r.text[:200]}"
            )
        removed.append({"conversation": conversation["id"], "user": user, "at": time.time()})
        runs.record(f"removed:{label}", removed, home=home)
        logger.info(f"removed {user} from conversation {conversation['id']} (devices stay open)")
    return {"label": label, "removed": removed}

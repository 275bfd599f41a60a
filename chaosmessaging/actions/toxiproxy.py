"""Network faults through the Toxiproxy HTTP API (toxiproxy-python client).

The same activities drive a real Toxiproxy (e.g. its container in a user's CI) or the embedded
stack's compatible proxy (`chaosmessaging proxy serve`). The API address comes from the
`toxiproxy_url` configuration key (env `CHAOSMESSAGING_TOXIPROXY_URL`, default the embedded
stack's proxy, else http://127.0.0.1:8474). Every fault is recorded in the fault ledger with a
recipe (`toxic` → delete it, `proxy_disabled` → enable the proxy) so an interrupted run can be
reverted by `chaosmessaging revert` or the safety-net control.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaosmessaging import faults
from chaosmessaging.clients import toxiproxy as tp
from chaosmessaging.util import home_of

__all__ = ["partition", "heal", "add_toxic", "remove_toxic", "reset", "add_latency"]

PARTITION_PREFIX = "chaosmessaging_partition"


def _target(proxy: str) -> str:
    return f"toxiproxy:{proxy}"


def _home(configuration: Configuration) -> str | None:
    return home_of(configuration)


def add_toxic(
    proxy: str,
    type: str,
    attributes: dict[str, Any] = None,
    stream: str = "downstream",
    toxicity: float = 1.0,
    name: str = None,
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Add a toxic (latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data) to a
    proxy and record it as a fault. Returns the toxic as created: name, type, stream, toxicity,
    attributes."""
    api_url = tp.api_url(configuration, secrets, url)
    server = tp.server(api_url)
    target = tp.proxy(server, proxy, api_url)
    if stream not in ("upstream", "downstream"):
        raise ActivityFailed(f"stream {stream!r} must be 'upstream' or 'downstream'")
    tp.check_fronts(target, proxy, api_url, configuration, secrets)
    name = name or f"{type}_{stream}"
    try:
        target.add_toxic(
            name=name, type=type, stream=stream, toxicity=toxicity, attributes=attributes or {}
        )
    except (InvalidToxic, ProxyExists) as exc:
        raise ActivityFailed(
            f"Toxiproxy refused toxic {name!r} on {proxy!r}: {exc.args[0] if exc.args else exc}"
        ) from None
    faults.record(
        "toxic",
        _target(proxy),
        {"api": api_url, "proxy": proxy, "toxic": name},
        home=_home(configuration),
    )
    toxic = {
        "name": name,
        "type": type,
        "stream": stream,
        "toxicity": toxicity,
        "attributes": attributes or {},
    }
    logger.info(f"toxic {name} added to {proxy}: {toxic}")
    return toxic


def add_latency(
    proxy: str,
    latency_ms: int,
    jitter_ms: int = 0,
    stream: str = "downstream",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Add `latency_ms` (± `jitter_ms`) to every chunk of data on one direction of a proxy."""
    for name, value in (("latency_ms", latency_ms), ("jitter_ms", jitter_ms)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ActivityFailed(
                f"{name} must be a non-negative number of milliseconds, got {value!r}"
            )
    return add_toxic(
        proxy,
        "latency",
        {"latency": latency_ms, "jitter": jitter_ms},
        stream,
        name=f"latency_{stream}",
        url=url,
        configuration=configuration,
        secrets=secrets,
    )


def remove_toxic(
    proxy: str,
    name: str,
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """Remove one toxic from a proxy (no error if it is already gone); clears its fault."""
    api_url = tp.api_url(configuration, secrets, url)
    removed = _delete_toxic(tp.server(api_url), proxy, name, api_url)
    _clear_toxic_faults(proxy, name, configuration)
    return bool(removed)


def _clear_toxic_faults(proxy: str, name: str, configuration: Configuration) -> None:
    for fault in faults.active(_home(configuration)):
        if fault.target == _target(proxy) and fault.revert.get("toxic") == name:
            faults.clear(fault.id, home=_home(configuration))


def _delete_toxic(server: Toxiproxy, proxy: str, name: str, api_url: str) -> bool | None:
    try:
        return tp.proxy(server, proxy, api_url).destroy_toxic(name)
    except NotFound:
        return False


def partition(
    proxy: str = "redis",
    mode: str = "disable",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Cut a service off through its proxy.

    mode "disable": the proxy stops listening and drops live connections (clients see connection
    refused/reset at once). mode "timeout": a `timeout` toxic with timeout 0 on both directions
    holds all data (clients hang until their own timeouts) while connections stay open."""
    api_url = tp.api_url(configuration, secrets, url)
    server = tp.server(api_url)
    target = tp.proxy(server, proxy, api_url)
    tp.check_fronts(target, proxy, api_url, configuration, secrets)
    if mode == "disable":
        target.disable()
        faults.record(
            "proxy_disabled",
            _target(proxy),
            {"api": api_url, "proxy": proxy},
            home=_home(configuration),
        )
    elif mode == "timeout":
        for stream in ("upstream", "downstream"):
            name = f"{PARTITION_PREFIX}_{stream}"
            target.add_toxic(name=name, type="timeout", stream=stream, attributes={"timeout": 0})
            faults.record(
                "toxic",
                _target(proxy),
                {"api": api_url, "proxy": proxy, "toxic": name},
                home=_home(configuration),
            )
    else:
        raise ActivityFailed(f"unknown partition mode {mode!r}: use 'disable' or 'timeout'")
    logger.info(f"proxy {proxy} partitioned ({mode})")
    return {"proxy": proxy, "mode": mode, "partitioned": True}


def heal(
    proxy: str = "redis",
    url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Undo `partition` (and any toxic recorded on this proxy): enable it, remove those toxics."""
    api_url = tp.api_url(configuration, secrets, url)
    server = tp.server(api_url)
    target = tp.proxy(server, proxy, api_url)
    target.enable()
    removed = []
    for fault in faults.active(_home(configuration)):
        if fault.target == _target(proxy) and fault.kind == "toxic":
            if _delete_toxic(server, proxy, fault.revert["toxic"], api_url):
                removed.append(fault.revert["toxic"])
    for name in list(target.toxics()):
        if name.startswith(PARTITION_PREFIX):
            target.destroy_toxic(name)
            removed.append(name)
    faults.clear(_target(proxy), home=_home(configuration))
    logger.info(f"proxy {proxy} healed (removed toxics: {removed or 'none'})")
    return {"proxy": proxy, "enabled": True, "removed_toxics": sorted(set(removed))}


def reset(url: str = None, configuration: Configuration = None, secrets: Secrets = None) -> bool:
    """Enable every proxy and remove every toxic (Toxiproxy's POST /reset); clears their faults."""
    api_url = tp.api_url(configuration, secrets, url)
    ok = tp.server(api_url).reset()
    for fault in faults.active(_home(configuration)):
        if fault.kind in ("toxic", "proxy_disabled") and fault.revert.get("api") == api_url:
            faults.clear(fault.id, home=_home(configuration))
    return ok


def _limits_toxic(
    arguments: dict, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    stream = arguments.get("stream", "downstream")
    if stream not in ("upstream", "downstream"):
        return [f"stream {stream!r} must be 'upstream' or 'downstream'"]
    return []


def _limits_partition(
    arguments: dict, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    mode = arguments.get("mode", "disable")
    if mode not in ("disable", "timeout"):
        return [f"partition mode {mode!r} must be 'disable' or 'timeout'"]
    return []


#: activity -> the check of its values against its real limits (validation control)
LIMITS = {
    "add_toxic": _limits_toxic,
    "add_latency": _limits_toxic,
    "partition": _limits_partition,
}


def _revert_toxic(recipe: dict, home: Path) -> dict:
    server = tp.server(recipe["api"])
    removed = _delete_toxic(server, recipe["proxy"], recipe["toxic"], recipe["api"])
    return {"proxy": recipe["proxy"], "toxic": recipe["toxic"], "removed": bool(removed)}


def _revert_disabled(recipe: dict, home: Path) -> dict:
    tp.proxy(tp.server(recipe["api"]), recipe["proxy"], recipe["api"]).enable()
    return {"proxy": recipe["proxy"], "enabled": True}

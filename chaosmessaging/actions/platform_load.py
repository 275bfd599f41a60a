"""Load on a platform described by its platform file, with client-side evidence (no database).

Entry points over `chaosmessaging.platform.scenarios`: the platform file comes from the
configuration key ``platform`` (or ``CHAOSMESSAGING_PLATFORM``), the load-test users and their
password from the usual keys (``messaging_loadtest_prefix`` / ``_password``; the password never
reaches the journal). Each run's figures go to ``<home>/runs/<run_id>.<label>.platform.json``
and the run's facts (``platform:<label>``), where the probes of
`chaosmessaging.probes.platform_results` judge them.

`start_platform_messages` returns at once (the load runs in a thread, so faults can be injected
meanwhile: T11); `wait_platform_run` joins it. The others run to completion.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.config import lookup
from chaosmessaging.platform import PlatformError, load_platform
from chaosmessaging.platform.scenarios import (
    MessageRunSpec,
    RigFailure,
    largest_payload,
    run_crud,
    run_logins,
    run_messages,
)
from chaosmessaging.util import home_of, stack_home

__all__ = [
    "start_platform_messages",
    "wait_platform_run",
    "run_platform_crud",
    "run_platform_logins",
    "find_largest_payload",
]

_THREADS: dict[str, threading.Thread] = {}
_ERRORS: dict[str, BaseException] = {}


def _platform(configuration: Configuration, secrets: Secrets):
    try:
        return load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None


def _metrics_url(platform: Any) -> str | None:
    for service in platform.services.values():
        if service.metrics is not None:
            return service.url + service.metrics.path
    return None


def _memory_metric(platform: Any) -> str | None:
    return platform.metric("process_resident_memory_bytes")


def results_path(label: str, configuration: Configuration = None) -> Path:
    home = home_of(configuration)
    return stack_home(home) / "runs" / f"{runs.current_run_id(home)}.{label}.platform.json"


def _store(label: str, result: dict, configuration: Configuration) -> dict:
    path = results_path(label, configuration)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    summary = {k: v for k, v in result.items() if not isinstance(v, list | dict)}
    summary["results"] = str(path)
    runs.record(f"platform:{label}", summary, home=home_of(configuration))
    return summary


def _credentials(configuration: Configuration, secrets: Secrets) -> tuple[str, str, str]:
    home = home_of(configuration)
    run_id = runs.current_run_id(home)
    prefix = str(lookup("messaging_loadtest_prefix", configuration, secrets))
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    return run_id, prefix, password


def _rig(label: str, exc: BaseException) -> ActivityFailed:
    return ActivityFailed(
        f"rig failure in platform run {label!r} (not the platform's fault): {exc}"
    )


def start_platform_messages(
    label: str = "messages",
    users: int = 4,
    devices_per_user: int = 1,
    conversations: int = 2,
    participants: int = 2,
    rate: float = 10.0,
    duration_s: float = 10.0,
    payload_bytes: int = 1024,
    settle_s: float = 15.0,
    removals: int = 0,
    max_inflight: int = 256,
    payload_headroom_bytes: int = 1024,
    setup_timeout_s: float = 900.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start a message run on the platform and return as soon as its load starts (logins,
    conversations and every device's first sync done, within `setup_timeout_s`), so a fault
    injected next hits the load, not the set-up. Every user's devices (each a login) receive
    through the file's delivery channel while messages of `payload_bytes` random bytes are sent
    at `rate` per second for `duration_s` into `conversations` conversations of `participants`
    members; `removals` members are removed along the way (T3). After the load,
    up to `settle_s` for the last deliveries. `payload_bytes` 0 takes the largest payload the
    platform accepted (`find_largest_payload` earlier in the run) less `payload_headroom_bytes`
    (a platform that limits the whole event, like Matrix, counts its envelope too, which grows
    under concurrent sends: more parent events). Judge with
    `chaosmessaging.probes.platform_results.platform_delivery`."""
    if label in _THREADS and _THREADS[label].is_alive():
        raise ActivityFailed(f"a platform run labelled {label!r} is already running")
    platform = _platform(configuration, secrets)
    if platform.delivery is None or platform.delivery.type != "sync":
        raise ActivityFailed(
            f"platform {platform.name!r} does not deliver by sync: start_platform_messages drives "
            "sync platforms (use the websocket fleet for WebSocket ones)"
        )
    payload_bytes = _payload_bytes(payload_bytes, payload_headroom_bytes, configuration)
    run_id, prefix, password = _credentials(configuration, secrets)
    spec = MessageRunSpec(
        label=label,
        run_id=run_id,
        prefix=prefix,
        password=password,
        users=int(users),
        devices_per_user=int(devices_per_user),
        conversations=int(conversations),
        participants=int(participants),
        rate=float(rate),
        duration_s=float(duration_s),
        payload_bytes=int(payload_bytes),
        settle_s=float(settle_s),
        removals=int(removals),
        max_inflight=int(max_inflight),
        metrics_url=_metrics_url(platform),
        memory_metric=_memory_metric(platform),
    )
    _start_in_thread(platform, spec, float(setup_timeout_s), configuration)
    runs.record(f"platform-started:{label}", time.time(), home=home_of(configuration))
    logger.info(
        f"platform run {label}: {users} users x {devices_per_user} devices, {rate}/s for "
        f"{duration_s}s, {payload_bytes}-byte payloads on {platform.name}"
    )
    return {"label": label, "platform": platform.name, "payload_bytes": int(payload_bytes)}


def _payload_bytes(payload_bytes: int, headroom_bytes: int, configuration: Configuration) -> int:
    """`payload_bytes`, or for 0 the largest payload `find_largest_payload` found in this run
    less `headroom_bytes`."""
    if int(payload_bytes) != 0:
        return int(payload_bytes)
    found = runs.fact("platform:largest", home=home_of(configuration)) or {}
    largest = max(0, (found.get("largest_accepted_bytes") or 0) - int(headroom_bytes))
    if not largest:
        raise ActivityFailed(
            "payload_bytes 0 means the largest accepted payload, but find_largest_payload "
            "has not found one in this run: run it first"
        )
    return largest


def _start_in_thread(
    platform: Any, spec: MessageRunSpec, setup_timeout_s: float, configuration: Configuration
) -> None:
    """Run `run_messages` in a thread (its result stored, its error kept for
    `wait_platform_run`) and return once its load starts; a rig failure when the set-up fails
    or outlasts `setup_timeout_s`."""
    label = spec.label
    _ERRORS.pop(label, None)
    loading = threading.Event()
    spec.on_load_start = loading.set

    def work() -> None:
        try:
            result = asyncio.run(run_messages(platform, spec))
            _store(label, result, configuration)
        except BaseException as exc:  # reported by wait_platform_run
            _ERRORS[label] = exc

    thread = threading.Thread(target=work, name=f"platform-{label}", daemon=True)
    started = time.time()
    _THREADS[label] = thread
    thread.start()
    while not loading.wait(0.2):
        if not thread.is_alive():
            raise _rig(label, _ERRORS.pop(label, RuntimeError("the run ended before its load")))
        if time.time() - started > setup_timeout_s:
            # the thread cannot be interrupted: wait_platform_run reports this at once
            _ERRORS[label] = TimeoutError(f"set-up not done within {setup_timeout_s:g}s")
            raise _rig(label, _ERRORS[label])


def _run_to_end(
    scenario: Callable[..., Coroutine[Any, Any, dict]],
    label: str,
    configuration: Configuration,
    secrets: Secrets,
    with_memory: bool = False,
    **settings: Any,
) -> dict:
    """``scenario(platform, label, run_id, prefix, password, **settings)`` run to its end and
    stored under `label` (`with_memory`: the server's memory sampled too); its `RigFailure`
    reported as the rig's."""
    platform = _platform(configuration, secrets)
    run_id, prefix, password = _credentials(configuration, secrets)
    if with_memory:
        settings.update(metrics_url=_metrics_url(platform), memory_metric=_memory_metric(platform))
    try:
        result = asyncio.run(scenario(platform, label, run_id, prefix, password, **settings))
    except RigFailure as exc:
        raise _rig(label, exc) from None
    return _store(label, result, configuration)


def wait_platform_run(
    label: str = "messages",
    timeout: float = 900.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Wait for the platform run `label` to finish; its summary (figures judged by the probes)."""
    thread = _THREADS.get(label)
    if thread is None:
        raise ActivityFailed(f"no platform run labelled {label!r} was started in this process")
    if label in _ERRORS:  # failed before its load started (set-up error or timeout)
        raise _rig(label, _ERRORS.pop(label))
    thread.join(float(timeout))
    if thread.is_alive():
        raise ActivityFailed(f"platform run {label!r} still running after {timeout:.0f}s")
    if label in _ERRORS:
        raise _rig(label, _ERRORS.pop(label))
    return runs.fact(f"platform:{label}", home=home_of(configuration))


def run_platform_crud(
    label: str = "crud",
    users: int = 4,
    rate: float = 10.0,
    duration_s: float = 10.0,
    foreign_read_every: int = 10,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Conversation CRUD at `rate` (plan T2 mix) with a deliberate read of another user's
    conversation every `foreign_read_every` operations; judged by `platform_crud`."""
    return _run_to_end(
        run_crud,
        label,
        configuration,
        secrets,
        users=int(users),
        rate=float(rate),
        duration_s=float(duration_s),
        foreign_read_every=int(foreign_read_every),
    )


def run_platform_logins(
    label: str = "logins",
    users: int = 4,
    rate: float = 5.0,
    duration_s: float = 10.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Logins at `rate` per second for `duration_s` (each a new device); judged by
    `platform_logins`."""
    return _run_to_end(
        run_logins,
        label,
        configuration,
        secrets,
        with_memory=True,
        users=int(users),
        rate=float(rate),
        duration_s=float(duration_s),
    )


def find_largest_payload(
    high: int = 1048576,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Bisect the largest payload (raw bytes) the platform accepts in one message, up to `high`,
    each probe a real send; every accepted probe is read back byte-exact. Recorded as
    ``platform:largest``."""
    return _run_to_end(largest_payload, "largest", configuration, secrets, high=int(high))

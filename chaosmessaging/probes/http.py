"""HTTP health probes: a service's `/readyz` answer, as data, as a boolean, or waited for.

`/readyz` answers 200 or 503 with `{"status": "ok"|"degraded", "checks": {...}}` (see
docs/reference-stack.md); another platform's readiness path and body are read as its platform file
says (`services.<name>.readiness`). `service` picks the base URL from configuration (`api` ->
`messaging_api_url`, `dispatcher`, `consumer`); `url` overrides it with any full URL.
"""

import json
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.config import redact
from chaosmessaging.clients.http import Readiness, http_get, service_url
from chaosmessaging.verdicts import Verdict, verdict

__all__ = ["readiness", "service_ready", "wait_until_ready"]


def readiness(
    url: str = None,
    service: str = "api",
    timeout: float = 2.0,
    unreachable_ok: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    GET the service's `/readyz` (or `url`) and return
    `{"status_code": 200, "ready": true, "status": "ok", "checks": {...}, "error": null}`.
    `ready` is true only for a 200 answer. An unreachable service raises an error, unless
    `unreachable_ok` is true: then `ready` is false, `status_code` 0 and `error` says why.
    """
    url = service_url(service, url, "/readyz", configuration, secrets)
    try:
        response = http_get(url, timeout)
    except ActivityFailed as error:
        if not unreachable_ok:
            raise
        return {
            "status_code": 0,
            "ready": False,
            "status": None,
            "checks": {},
            "error": str(error),
        }
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    spec = Readiness(service, configuration, secrets)
    checks, _ = spec.checks(body)
    return {
        "status_code": response.status_code,
        "ready": response.status_code in spec.ready_status,
        "status": body.get("status"),
        "checks": checks,
        "error": None,
    }


def service_ready(
    url: str = None,
    service: str = "api",
    timeout: float = 2.0,
    unreachable_ok: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: the service's `/readyz` (or `url`) answers 200; the figures are `readiness`'s
    (`status_code`, `status`, `checks`: which dependency is degraded). An unreachable service
    raises an error, unless `unreachable_ok` is true (then the verdict is not ok).
    """
    seen = readiness(url, service, timeout, unreachable_ok, configuration, secrets)
    if seen["ready"]:
        return verdict(True, f"{service} is ready", **seen)
    names = Readiness(service, configuration, secrets).degraded(seen["checks"])
    degraded = {k: seen["checks"][k] for k in names}
    why = seen["error"] or f"HTTP {seen['status_code']}, degraded: {degraded or 'unknown'}"
    return verdict(False, f"{service} is not ready: {why}", **seen)


def wait_until_ready(
    timeout: float = 60.0,
    url: str = None,
    service: str = "api",
    interval: float = 0.5,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Poll the service's `/readyz` (or `url`) every `interval` seconds until it answers 200,
    and return `{"ready": true, "waited_s": S, "attempts": N}`: `waited_s` is the recovery
    time measured by polling. Raises an error with the last answer if it is not ready
    within `timeout` seconds.
    """
    url = service_url(service, url, "/readyz", configuration, secrets)
    started = time.monotonic()
    attempts, last = 0, None
    while True:
        attempts += 1
        answer = readiness(url, service, min(2.0, max(timeout, 0.1)), True, configuration, secrets)
        if answer["ready"]:
            waited = round(time.monotonic() - started, 3)
            logger.info(f"{redact(url)} ready after {waited}s ({attempts} attempts)")
            return {"ready": True, "waited_s": waited, "attempts": attempts}
        last = answer["error"] or f"HTTP {answer['status_code']} checks={answer['checks']}"
        if time.monotonic() - started + interval > timeout:
            raise ActivityFailed(
                f"{redact(url)} not ready after {timeout}s ({attempts} "
                f"attempts); last answer: {last}"
            )
        time.sleep(interval)

"""Which hosts an activity may open a connection to: loopback, plus what the user allows.

A chaos toolkit injects faults and load; aimed at the wrong address it harms a system nobody meant
to test. Every URL and DSN an activity connects to passes `check` first (the shared clients do it,
so no probe or action opens a socket to a refused host), and the `validation` control checks every
configured target when the run starts, before any probe. `address` looks an address up and
checks it in one call: the way every activity reaches a configured target.

Allowed: loopback IP literals (127.0.0.0/8, ::1), `localhost`, Unix-socket paths, and each host
listed in `allow_hosts` (configuration or secrets key, or env `CHAOSMESSAGING_ALLOW_HOSTS`; a list
or a comma-separated string of host names, IP addresses or CIDR networks such as `10.0.0.0/8`).
Names are never resolved here (a DNS query is itself traffic): a name other than `localhost` must
be listed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import unquote, urlsplit

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging.config import lookup, redact

__all__ = [
    "ALLOW_ENV",
    "TargetRefused",
    "allowed_hosts",
    "allow_list_errors",
    "host_of",
    "address",
    "check",
    "is_allowed",
]

ALLOW_ENV = "CHAOSMESSAGING_ALLOW_HOSTS"
_KV_HOST = re.compile(r"(?:^|\s)(?:host|hostaddr)\s*=\s*'?([^\s']+)")


class TargetRefused(ActivityFailed):
    """A URL or DSN points outside loopback and is not in `allow_hosts`."""


def allowed_hosts(configuration: Configuration = None, secrets: Secrets = None) -> list[str]:
    """The user's allow-list (configuration, secrets, then the environment)."""
    raw = None
    nested = [v for v in (secrets or {}).values() if isinstance(v, dict)]
    for scope in (configuration or {}, *nested, secrets or {}):
        if scope.get("allow_hosts") not in (None, ""):
            raw = scope["allow_hosts"]
            break
    if raw is None:
        raw = os.environ.get(ALLOW_ENV, "")
    if isinstance(raw, str):
        raw = raw.split(",")
    return [str(h).strip().lower() for h in raw if str(h).strip()]


def host_of(target: str) -> str | None:
    """The host a URL (`scheme://user:pw@host:port/...`) or libpq key=value DSN names; a path
    for a Unix socket; None when none can be read."""
    target = str(target).strip()
    if "://" in target:
        parts = urlsplit(target)
        if parts.scheme in ("unix", "http+unix", "npipe"):  # a local socket (e.g. docker_host)
            return (parts.netloc + parts.path) or None
        if parts.hostname:
            return unquote(parts.hostname).lower()
        query_host = re.search(r"[?&]host=([^&]+)", parts.query or "")
        return unquote(query_host.group(1)) if query_host else None
    found = _KV_HOST.search(target)
    if found:
        return found.group(1).split(",")[0].lower()
    if re.fullmatch(r"[\w.\-\[\]:]+", target):  # a bare host or host:port
        return (
            target.rsplit(":", 1)[0].strip("[]").lower()
            if target.count(":") == 1
            else target.strip("[]").lower()
        )
    return None


def is_allowed(host: str, allow: list[str]) -> bool:
    if host.startswith("/") or host == "localhost" or host in allow:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    for entry in allow:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check(
    target: str, what: str, configuration: Configuration = None, secrets: Secrets = None
) -> str:
    """Return `target` if its host is allowed; raise `TargetRefused` (naming `what`, the
    address with its password hidden, and how to allow it) otherwise."""
    host = host_of(target)
    if host is None:
        raise TargetRefused(
            f"{what} {redact(target)!r} names no host: expected a URL such as "
            "http://127.0.0.1:8080 or postgresql://user@127.0.0.1:5432/db"
        )
    if not is_allowed(host, allowed_hosts(configuration, secrets)):
        raise TargetRefused(
            f"refusing {what} {redact(target)}: {host} is not loopback; chaosmessaging only "
            f"targets loopback unless the host is listed in allow_hosts (configuration key or "
            f"{ALLOW_ENV}=host1,10.0.0.0/8)"
        )
    return target


def address(
    key: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
    value: object = None,
    required: bool = True,
    what: str | None = None,
    scheme: str | None = None,
) -> str | None:
    """The address `key` resolves to (`chaosmessaging.config.lookup`: the activity's `value`,
    secrets, configuration, environment, embedded stack, default), checked against the
    allow-list in the same call (`check`, naming `what`, default the key). With `scheme`, an
    address written without one (``127.0.0.1:9090``) gets ``<scheme>://`` first. None only when
    not `required` and nothing gives it."""
    found = lookup(key, configuration, secrets, value=value, required=required)
    if found in (None, ""):
        return None
    found = str(found)
    if scheme and "://" not in found:
        found = f"{scheme}://{found}"
    return check(found, what or key, configuration, secrets)


_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")


def allow_list_errors(configuration: Configuration = None, secrets: Secrets = None) -> list[str]:
    """One sentence per `allow_hosts` entry that is neither a host name, an IP address nor a
    CIDR network (e.g. `10.0.0.0/33`, `10.0.0/8`, `http://db:5432`): such an entry allows
    nothing, silently."""
    errors = []
    for entry in allowed_hosts(configuration, secrets):
        looks_ip = "/" in entry or re.fullmatch(r"[\d.]+", entry) or ":" in entry
        if looks_ip and "://" not in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
                continue
            except ValueError as exc:
                errors.append(
                    f"allow_hosts entry {entry!r} is not a valid IP address or CIDR network "
                    f"({exc}): write e.g. 10.0.0.0/8, 192.168.1.20 or a host name"
                )
                continue
        if not _HOST_NAME.match(entry):
            errors.append(
                f"allow_hosts entry {entry!r} is not a host name, IP address or CIDR network: "
                "list bare hosts (db.internal, 10.0.0.5, 10.0.0.0/8), no scheme, port or path"
            )
    return errors

"""Where every address and name an activity uses comes from.

Order of precedence for a key (e.g. ``messaging_redis_url``):

1. an explicit argument of the activity (handled by the activity itself),
2. Chaos Toolkit ``secrets`` (any scope, flattened) then ``configuration`` (which the engine
   already resolved from ``{"type": "env", ...}`` entries),
3. the environment variable named in ``KEYS`` (e.g. ``CHAOSMESSAGING_REDIS_URL``),
4. the running embedded stack (``<home>/stack.json``), so experiments work out of the box,
5. the static default in ``KEYS``.

Nothing here knows the reference stack's code; the embedded stack is only read through its state
file. Values that look like credentials are never logged by callers: use ``redact`` for messages.
"""

from __future__ import annotations

import os
import re
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging.stack.state import LOADTEST_SETTINGS, StackNotRunning, load_state
from chaosmessaging.util import home_of

__all__ = ["lookup", "source_of", "redact", "KEYS", "TARGET_KEYS"]

# The embedded stack's load-test password unless CHAOSMESSAGING_LOADTEST_PASSWORD says otherwise
# (documented in README.md). It guards throwaway users on loopback only.
DEFAULT_LOADTEST_PASSWORD = LOADTEST_SETTINGS["password"][1]

# key -> (environment variable, (embedded-stack service, field) or None, static default)
KEYS: dict[str, tuple[str, tuple[str, str] | None, str | None]] = {
    "messaging_api_url": ("CHAOSMESSAGING_API_URL", ("api", "address"), None),
    "messaging_dispatcher_url": ("CHAOSMESSAGING_DISPATCHER_URL", ("dispatcher", "address"), None),
    "messaging_consumer_url": ("CHAOSMESSAGING_CONSUMER_URL", ("consumer", "address"), None),
    "messaging_auth_url": ("CHAOSMESSAGING_AUTH_URL", ("auth", "address"), None),
    "messaging_gateway_url": ("CHAOSMESSAGING_GATEWAY_URL", ("gateway", "address"), None),
    "messaging_redis_url": ("CHAOSMESSAGING_REDIS_URL", ("redis", "address"), None),
    "messaging_pg_dsn": ("CHAOSMESSAGING_PG_DSN", ("postgres", "address"), None),
    "toxiproxy_url": (
        "CHAOSMESSAGING_TOXIPROXY_URL",
        ("proxy", "address"),
        "http://127.0.0.1:8474",
    ),
    # where metric verdicts and samplers read: `scrape` (each service's /metrics) or `prometheus`
    # (PromQL at prometheus_url, summed over replicas; see chaosmessaging.clients.prometheus)
    "metrics_source": ("CHAOSMESSAGING_METRICS_SOURCE", None, "scrape"),
    "prometheus_url": ("CHAOSMESSAGING_PROMETHEUS_URL", ("prometheus", "address"), None),
    "prometheus_selectors": ("CHAOSMESSAGING_PROMETHEUS_SELECTORS", None, None),
    "prometheus_replica_labels": ("CHAOSMESSAGING_PROMETHEUS_REPLICA_LABELS", None, None),
    "prometheus_fresh_within_s": ("CHAOSMESSAGING_PROMETHEUS_FRESH_WITHIN_S", None, None),
    # Matrix Synapse (`chaosmessaging stack up --platform matrix`): client API and metrics listener
    "matrix_url": ("CHAOSMESSAGING_MATRIX_URL", ("synapse", "address"), None),
    "matrix_metrics_url": (
        "CHAOSMESSAGING_MATRIX_METRICS_URL",
        ("synapse", "metrics_address"),
        None,
    ),
    "messaging_stream": ("CHAOSMESSAGING_STREAM", None, "messages"),
    "messaging_group": ("CHAOSMESSAGING_GROUP", None, "deliveries"),
    "messaging_dead_stream": ("CHAOSMESSAGING_DEAD_STREAM", None, "messages:dead"),
    "chaosmessaging_home": ("CHAOSMESSAGING_HOME", None, None),
    # load-test users (seeded by `stack up`; k6 logs in as <prefix>-0 .. <prefix>-<users-1>).
    # The password is a secret: give it as a Chaos Toolkit secret or the environment variable,
    # never in an experiment's configuration (the journal records configuration).
    **{
        f"messaging_loadtest_{name}": (env, None, default)
        for name, (env, default) in LOADTEST_SETTINGS.items()
    },
}


#: the addresses of the platform under test (each checked against the allow-list)
TARGET_KEYS = [k for k in KEYS if k.endswith(("_url", "_dsn"))]


def _flatten_secrets(secrets: Secrets | None) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in (secrets or {}).items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _find(
    key: str, configuration: Configuration = None, secrets: Secrets = None, value: Any = None
) -> tuple[Any, str | None]:
    """(value, where it came from) for `key`, following the module docstring's order; the
    source is "argument", "secrets", "configuration", "environment <VAR>", "embedded stack
    <home>", "default" or None (no value)."""
    if value not in (None, ""):
        return value, "argument"
    flat = _flatten_secrets(secrets)
    if flat.get(key) not in (None, ""):
        return flat[key], "secrets"
    if (configuration or {}).get(key) not in (None, ""):
        return configuration[key], "configuration"
    env_name, from_stack, default = KEYS.get(key, (key.upper(), None, None))
    if os.environ.get(env_name):
        return os.environ[env_name], f"environment {env_name}"
    if from_stack is not None:
        service, field = from_stack
        try:
            state = load_state(home_of(configuration))
            record = state.services.get(service)
            if record is not None:
                return getattr(record, field), f"embedded stack {state.home}"
        except StackNotRunning:
            pass
    if default is not None:
        return default, "default"
    return None, None


#: where a value counts as set by the user (not a fallback)
EXPLICIT_SOURCES = ("argument", "secrets", "configuration", "environment")


def source_of(key: str, configuration: Configuration = None, secrets: Secrets = None) -> str | None:
    """Where `lookup` would take `key` from (see `_find`), or None when nothing gives it."""
    return _find(key, configuration, secrets)[1]


def lookup(
    key: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
    value: Any = None,
    required: bool = True,
) -> Any:
    """Resolve `key` as described in the module docstring; `value` is the activity's argument."""
    found, source = _find(key, configuration, secrets, value)
    if source is not None or not required:
        return found
    env_name = KEYS.get(key, (key.upper(),))[0]
    raise ActivityFailed(
        f"no value for '{key}': set it in the experiment's configuration, export {env_name}, "
        "or start the embedded stack with `chaosmessaging stack up`"
    )


# scheme://userinfo@ — userinfo runs to the LAST "@" of the address (a password may hold "@",
# ":", "/" or percent-escapes; over-hiding a query's "@" is the safe side of the trade).
_URL_USERINFO = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*)@(?=[^@\s'\"<>/]*(?:[/?#\s'\"<>]|$))",
    re.IGNORECASE,
)
# libpq key=value DSNs and query parameters: password=..., pass=..., token=...
_PASSWORD_PARAM = re.compile(
    r"(?P<key>\b(?:password|passwd|pass|pwd|token|secret)\s*=\s*)"
    r"(?P<value>'[^']*'|[^\s&;,'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Hide passwords in URLs/DSNs of any scheme (``postgresql://u:secret@h`` -> ``u:***@h``,
    ``redis://:pw@h`` -> ``:***@h``) and in ``password=...`` parameters, whatever characters the
    password holds (``@ : / %`` and percent-escapes included)."""

    def userinfo(match: re.Match) -> str:
        user, sep, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if sep else match[0]

    return _PASSWORD_PARAM.sub(lambda m: f"{m['key']}***", _URL_USERINFO.sub(userinfo, str(text)))

"""Storage-layer settings, read from ``MSGSTACK_STORAGE_*`` / ``MSGSTACK_BREAKER_*`` variables.

Kept apart from `msgstack.config.Settings` (which holds what every service needs) so the storage
layer's tuning knobs live with the layer. The pool size itself stays `MSGSTACK_POOL_MAX` (the plan
uses 20), read by `msgstack.config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from msgstack.config import ConfigError

__all__ = ["StorageSettings", "load"]


@dataclass(frozen=True)
class StorageSettings:
    acquire_timeout_s: float  # waiting for a pooled PostgreSQL connection
    statement_timeout_s: float  # one PostgreSQL round of work
    redis_timeout_s: float  # one Redis command (stream publish, cache get/set)
    attempts: int  # tries per operation, the first included (1 = no retry)
    backoff_base_s: float  # full-jitter exponential backoff: random(0, base * 2**n), capped
    backoff_max_s: float
    breaker_failures: int  # consecutive failures that open a breaker
    breaker_reset_s: float  # how long a breaker stays open before a half-open trial
    cache_ttl_s: int
    events_stream: str  # the stream `POST /v1/storage/events` publishes to
    events_maxlen: int  # approximate MAXLEN of that stream, so a soak cannot fill Redis


def _num(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set a number >= {minimum:g}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value:g} is too small; it must be >= {minimum:g}")
    return value


def load(env: Mapping[str, str] | None = None) -> StorageSettings:
    """Read the storage settings; raise ConfigError naming the variable to fix."""
    env = os.environ if env is None else env
    return StorageSettings(
        acquire_timeout_s=_num(env, "MSGSTACK_PG_ACQUIRE_TIMEOUT_S", 2.0, 0.01),
        statement_timeout_s=_num(env, "MSGSTACK_PG_STATEMENT_TIMEOUT_S", 5.0, 0.01),
        redis_timeout_s=_num(env, "MSGSTACK_REDIS_TIMEOUT_S", 1.0, 0.01),
        attempts=int(_num(env, "MSGSTACK_STORAGE_ATTEMPTS", 3, 1)),
        backoff_base_s=_num(env, "MSGSTACK_STORAGE_BACKOFF_BASE_S", 0.02, 0.0),
        backoff_max_s=_num(env, "MSGSTACK_STORAGE_BACKOFF_MAX_S", 0.5, 0.0),
        breaker_failures=int(_num(env, "MSGSTACK_BREAKER_FAILURES", 5, 1)),
        breaker_reset_s=_num(env, "MSGSTACK_BREAKER_RESET_S", 3.0, 0.01),
        cache_ttl_s=int(_num(env, "MSGSTACK_CACHE_TTL_S", 30, 1)),
        events_stream=env.get("MSGSTACK_EVENTS_STREAM", "").strip() or "storage:events",
        events_maxlen=int(_num(env, "MSGSTACK_EVENTS_MAXLEN", 100_000, 1)),
    )

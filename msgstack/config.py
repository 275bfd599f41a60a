"""Settings of a msgstack process, read from ``MSGSTACK_*`` environment variables only."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ConfigError", "Settings", "load"]

MIN_PAYLOAD = 1024
# Commands that run once and exit: no HTTP port, no Redis.
OFFLINE = ("migrate", "seed-users", "seed-messages")
# argon2id defaults: OWASP's minimum recommendation (m=19 MiB, t=2, p=1), see
# docs/reference-stack.md.
ARGON2_DEFAULTS = {"time_cost": 2, "memory_kib": 19456, "parallelism": 1}


class ConfigError(ValueError):
    """An environment variable is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    pg_dsn: str
    redis_url: str
    host: str
    port: int | None
    stream: str
    group: str
    dead_stream: str
    consumer_name: str
    pool_max: int
    max_payload: int
    reclaim_idle_ms: int
    api_workers: int = 2
    participant_channel: str = "msgstack:participants"
    participant_cache_ttl: float = 300.0
    # the dispatcher's wait after a claim that did not fill a batch: the latency it adds to every
    # message (at most this long in the outbox) against the claims per second it costs
    dispatch_poll_s: float = 0.1
    redis_pool_max: int = 50
    token_ttl: int = 3600
    # how long an API process trusts a token it checked against Redis without asking again:
    # the bound on how late a logout or expiry takes effect (0: ask Redis on every request)
    token_cache_s: float = 0.0
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    kdf_threads: int = 2
    kdf_max_pending: int = 256
    # the consumer answers /readyz 503 when entries wait and none was acknowledged for this long
    stall_seconds: int = 30
    ws_send_queue: int = 1000
    ws_ping_interval: float = 30.0
    ws_ping_timeout: float = 30.0
    ws_max_client_frame: int = 4096


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not an integer; set it to a whole number (>= {minimum}) or unset it"
        ) from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is too small; it must be >= {minimum}")
    return value


def _required(env: Mapping[str, str], name: str, example: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set; export it, e.g. {name}={example}")
    return value


def load(service: str, env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings `service` needs; raise ConfigError naming the variable to fix."""
    env = os.environ if env is None else env
    port = _int(env, "MSGSTACK_PORT", None, 1)
    if port is None and service not in OFFLINE:
        raise ConfigError(
            f"MSGSTACK_PORT is not set; the {service} serves /healthz, /readyz and "
            "/metrics on it: export MSGSTACK_PORT=<free port>"
        )
    redis_url = (
        env.get("MSGSTACK_REDIS_URL", "").strip()
        if service in OFFLINE
        else _required(env, "MSGSTACK_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    time_cost = _int(env, "MSGSTACK_ARGON2_TIME_COST", ARGON2_DEFAULTS["time_cost"], 1)
    parallelism = _int(env, "MSGSTACK_ARGON2_PARALLELISM", ARGON2_DEFAULTS["parallelism"], 1)
    # argon2 needs at least 8 KiB per lane
    memory_kib = _int(
        env, "MSGSTACK_ARGON2_MEMORY_KIB", ARGON2_DEFAULTS["memory_kib"], 8 * parallelism
    )
    return Settings(
        pg_dsn=_required(env, "MSGSTACK_PG_DSN", "postgresql://postgres@127.0.0.1:5432/messaging"),
        redis_url=redis_url,
        host=env.get("MSGSTACK_HOST") or "127.0.0.1",
        port=port,
        stream=env.get("MSGSTACK_STREAM") or "messages",
        group=env.get("MSGSTACK_GROUP") or "deliveries",
        dead_stream=env.get("MSGSTACK_DEAD_STREAM") or "messages:dead",
        consumer_name=env.get("MSGSTACK_CONSUMER_NAME")
        or f"consumer-{socket.gethostname()}-{os.getpid()}",
        pool_max=_int(env, "MSGSTACK_POOL_MAX", 20, 1),
        max_payload=_int(env, "MSGSTACK_MAX_PAYLOAD", 65536, MIN_PAYLOAD),
        reclaim_idle_ms=_int(env, "MSGSTACK_RECLAIM_IDLE_MS", 5000, 1),
        api_workers=_int(env, "MSGSTACK_API_WORKERS", 2, 1),
        participant_channel=env.get("MSGSTACK_PARTICIPANT_CHANNEL") or "msgstack:participants",
        participant_cache_ttl=float(_int(env, "MSGSTACK_PARTICIPANT_CACHE_TTL", 300, 1)),
        dispatch_poll_s=_int(env, "MSGSTACK_DISPATCH_POLL_MS", 100, 1) / 1000,
        redis_pool_max=_int(env, "MSGSTACK_REDIS_POOL_MAX", 50, 2),
        token_ttl=_int(env, "MSGSTACK_AUTH_TOKEN_TTL", 3600, 1),
        token_cache_s=_int(env, "MSGSTACK_AUTH_TOKEN_CACHE_MS", 0, 0) / 1000,
        argon2_time_cost=time_cost,
        argon2_memory_kib=memory_kib,
        argon2_parallelism=parallelism,
        kdf_threads=_int(env, "MSGSTACK_AUTH_KDF_THREADS", os.cpu_count() or 1, 1),
        kdf_max_pending=_int(env, "MSGSTACK_AUTH_KDF_MAX_PENDING", 256, 1),
        stall_seconds=_int(env, "MSGSTACK_STALL_SECONDS", 30, 1),
        ws_send_queue=_int(env, "MSGSTACK_WS_SEND_QUEUE", 1000, 1),
        ws_ping_interval=float(_int(env, "MSGSTACK_WS_PING_INTERVAL_MS", 30000, 50)) / 1000,
        ws_ping_timeout=float(_int(env, "MSGSTACK_WS_PING_TIMEOUT_MS", 30000, 50)) / 1000,
        ws_max_client_frame=_int(env, "MSGSTACK_WS_MAX_CLIENT_FRAME", 4096, 64),
    )

"""Redis: a client from configuration, guarded calls, and the pending-entries reads that both a
fault (kill the consumer while it holds entries) and the verdicts about it need.

A missing stream or consumer group is a normal state (an empty Redis after a restart): the
guarded `group_call` returns None for it and logs why. An unreachable Redis raises
`ActivityFailed` naming the address (password redacted).
"""

# No `from __future__ import annotations`: `pel_count` and `pending_snapshot` are activities too
# (`probes.redis`, `probes.recovery`), and `chaos discover` types only evaluated annotations.
import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs, targets
from chaosmessaging.clients.http import STACK_HINT
from chaosmessaging.config import lookup, redact

__all__ = [
    "redis_client",
    "redis_unreachable",
    "call",
    "group_call",
    "stream_names",
    "pel_count",
    "last_delivered_id",
    "pending_read_after",
    "pending_snapshot",
]


def redis_client(
    url: str = None, configuration: Configuration = None, secrets: Secrets = None
) -> tuple[redis.Redis, str]:
    """A sync redis-py client for `url` (or `messaging_redis_url`) and the URL it uses."""
    url = targets.address("messaging_redis_url", configuration, secrets, url)
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=3, socket_timeout=10, decode_responses=True
        )
    except ValueError as error:
        raise ActivityFailed(f"invalid Redis URL {redact(url)}: {error}") from None
    return client, url


def _speaks_plain_redis(url: str) -> bool:
    """True when the server of a rediss:// URL answers a plain-text PING (it has no TLS)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except (OSError, ValueError):
        return False
    return answer.startswith((b"+PONG", b"-NOAUTH", b"-ERR"))


def redis_unreachable(url: str, error: Exception) -> ActivityFailed:
    if str(url).lower().startswith("rediss://") and _speaks_plain_redis(url):
        return ActivityFailed(
            f"Redis at {redact(url)} does not speak TLS ({error}): rediss:// asks for TLS, but "
            "this server answers in plain text; use redis:// for it, or enable TLS on the server"
        )
    return ActivityFailed(f"cannot reach Redis at {redact(url)}: {error} — {STACK_HINT}")


def stream_names(
    stream: str, group: str, configuration: Configuration, secrets: Secrets
) -> tuple[str, str]:
    """The stream and group to use: the arguments, else configuration, else the defaults."""
    return (
        lookup("messaging_stream", configuration, secrets, stream),
        lookup("messaging_group", configuration, secrets, group),
    )


def call(url: str, func, *args, **kwargs):
    """`func(*args)`; connection errors and refusals become an actionable `ActivityFailed`."""
    try:
        return func(*args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise redis_unreachable(url, error) from None
    except redis.ResponseError as error:
        raise ActivityFailed(f"Redis at {redact(url)} refused {func.__name__}: {error}") from None


def group_call(url: str, stream: str, group: str, func, *args, **kwargs):
    """`call` where a missing stream or group is a normal state: None, with a log line."""
    try:
        return func(*args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise redis_unreachable(url, error) from None
    except redis.ResponseError as error:
        text = str(error)
        if text.startswith("NOGROUP") or "no such key" in text:
            logger.info(
                f"stream '{stream}' or its group '{group}' does not exist yet "
                f"({text}): reporting nothing pending"
            )
            return None
        raise ActivityFailed(f"Redis at {redact(url)} refused {func.__name__}: {error}") from None


#: the entries pending in the consumer group at a fault (`pending_snapshot`; a random kill's
#: `<label>#<n>`), judged by `probes.recovery.pending_reclaimed` / `kills_reclaimed`
PENDING = runs.Snapshots(
    "pending",
    "no snapshot of the entries pending at {label!r}: did the fault action record one?",
)


def pel_count(
    stream: str = None,
    group: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """
    Size of the consumer group's pending entries list: entries delivered to a consumer but
    not yet acknowledged (`XPENDING` summary count). 0 when the stream or group is missing.
    """
    stream, group = stream_names(stream, group, configuration, secrets)
    client, url = redis_client(redis_url, configuration, secrets)
    summary = group_call(url, stream, group, client.xpending, stream, group)
    return int(summary["pending"]) if summary else 0


def last_delivered_id(
    stream: str = None,
    group: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> str:
    """The consumer group's last-delivered id (`XINFO GROUPS`): every entry a consumer reads
    with ``>`` from now on has a greater id. "0-0" when the stream or group is missing."""
    stream, group = stream_names(stream, group, configuration, secrets)
    client, url = redis_client(None, configuration, secrets)
    groups = group_call(url, stream, group, client.xinfo_groups, stream) or []
    return next((g["last-delivered-id"] for g in groups if g["name"] == group), "0-0")


def pending_read_after(
    after_id: str,
    count: int,
    stream: str = None,
    group: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """How many (up to `count`) of the group's pending entries have ids after `after_id`: with
    `after_id` a `last_delivered_id` taken earlier, the entries read since then and not yet
    acknowledged (the ones left by a dead consumer are older). One `XPENDING` range call."""
    stream, group = stream_names(stream, group, configuration, secrets)
    client, url = redis_client(None, configuration, secrets)
    found = group_call(
        url, stream, group, client.xpending_range, stream, group, f"({after_id}", "+", int(count)
    )
    return len(found or [])


def pending_snapshot(
    label: str = "at_kill",
    stream: str = None,
    group: str = None,
    max_entries: int = 100000,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Record the group's pending entries (ids and message ids) in the run's facts under
    `pending:<label>`; return `{"count": N, "consumers": {name: n}, "sample": [first ids]}`."""
    stream, group = stream_names(stream, group, configuration, secrets)
    client, url = redis_client(None, configuration, secrets)
    try:
        pending = client.xpending_range(stream, group, min="-", max="+", count=max_entries)
        entries = []
        for item in pending:
            found = client.xrange(stream, min=item["message_id"], max=item["message_id"])
            message_id = found[0][1].get("message_id") if found else None
            entries.append(
                {"id": item["message_id"], "consumer": item["consumer"], "message_id": message_id}
            )
    except redis.ResponseError as error:
        if "NOGROUP" not in str(error):
            raise ActivityFailed(f"XPENDING {stream} {group} failed: {error}") from None
        entries = []
    except redis.RedisError as error:
        raise redis_unreachable(url, error) from None
    consumers: dict[str, int] = {}
    for e in entries:
        consumers[e["consumer"]] = consumers.get(e["consumer"], 0) + 1
    PENDING.record(label, entries, configuration)
    logger.info(f"{len(entries)} entries pending in {stream}/{group} at {label}")
    return {
        "count": len(entries),
        "consumers": consumers,
        "sample": [e["id"] for e in entries[:10]],
    }

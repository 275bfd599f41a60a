"""Redis Streams probes: stream length, the consumer group's pending entries list (PEL),
consumer lag and the dead-letter stream.

Stream, group and dead-letter stream names default to the `messaging_stream`,
`messaging_group` and `messaging_dead_stream` configuration keys, Redis to `messaging_redis_url`.
A missing stream or group is a normal state (an empty Redis after a restart): such probes
return zeros and log why. An unreachable Redis raises `ActivityFailed`.

Written for Redis 6.2 (the embedded stack's): `XINFO GROUPS` has no `lag` there, so lag is
counted from the group's last-delivered id; on Redis 7+ its `lag` field is used when present.
"""

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging.config import lookup
from chaosmessaging.clients.redis import call as _call
from chaosmessaging.clients.redis import group_call as _group_call
from chaosmessaging.clients.redis import pel_count, redis_client  # pel_count: also an activity
from chaosmessaging.clients.redis import stream_names as _names
from chaosmessaging.verdicts import Verdict, verdict

__all__ = [
    "consumer_lag",
    "consumer_lag_entries",
    "consumer_lag_seconds",
    "dead_letter_count",
    "oldest_pending_idle_ms",
    "pel_count",
    "pel_size_at_most",
    "pending_entries",
    "stream_length",
    "wait_for_consumer_backlog",
]

_SCAN_CHUNK = 1000


def stream_length(
    stream: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """
    Number of entries in the stream (`XLEN`); 0 when the stream does not exist.
    `stream` defaults to the `messaging_stream` configuration key.
    """
    stream = lookup("messaging_stream", configuration, secrets, stream)
    client, url = redis_client(redis_url, configuration, secrets)
    return _call(url, client.xlen, stream)


@platform_applies
def pel_size_at_most(
    max_entries: int,
    stream: str = None,
    group: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: the consumer group's pending entries list holds at most `max_entries` entries
    (figures: `pel_size`, `max_entries`).
    """
    size = pel_count(stream, group, redis_url, configuration, secrets)
    ok = size <= int(max_entries)
    if not ok:
        logger.warning(f"PEL holds {size} entries, more than {max_entries}")
    return verdict(
        ok,
        f"PEL holds {size} entries (at most {int(max_entries)})",
        pel_size=size,
        max_entries=int(max_entries),
    )


def oldest_pending_idle_ms(
    stream: str = None,
    group: str = None,
    max_scan: int = 10000,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """
    Idle time in milliseconds of the pending entry that has waited longest for an
    acknowledgement (0 when nothing is pending). Scans at most `max_scan` pending entries,
    oldest ids first. A value above the consumer's reclaim idle time means reclaiming is stuck.
    """
    stream, group = _names(stream, group, configuration, secrets)
    client, url = redis_client(redis_url, configuration, secrets)
    oldest, start, seen = 0, "-", 0
    while seen < max_scan:
        count = min(_SCAN_CHUNK, max_scan - seen)
        page = _group_call(
            url, stream, group, client.xpending_range, stream, group, start, "+", count
        )
        if not page:
            break
        oldest = max(oldest, *(int(e["time_since_delivered"]) for e in page))
        seen += len(page)
        if len(page) < count:
            break
        start = "(" + page[-1]["message_id"]
    return oldest


def pending_entries(
    stream: str = None,
    group: str = None,
    count: int = 100,
    consumer: str = None,
    min_idle_ms: int = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> list:
    """
    Up to `count` pending entries of the group, oldest ids first, each as
    `{"id", "consumer", "idle_ms", "deliveries"}`; optionally only those of one `consumer`
    or idle for at least `min_idle_ms`. Empty when the stream or group is missing.
    """
    stream, group = _names(stream, group, configuration, secrets)
    client, url = redis_client(redis_url, configuration, secrets)
    page = (
        _group_call(
            url,
            stream,
            group,
            client.xpending_range,
            stream,
            group,
            "-",
            "+",
            count,
            consumername=consumer,
            idle=min_idle_ms,
        )
        or []
    )
    return [
        {
            "id": e["message_id"],
            "consumer": e["consumer"],
            "idle_ms": int(e["time_since_delivered"]),
            "deliveries": int(e["times_delivered"]),
        }
        for e in page
    ]


def consumer_lag(
    stream: str = None,
    group: str = None,
    max_count: int = 100000,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    How far the consumer group is behind the stream, as
    `{"entries": N, "seconds": S, "pending": P, "truncated": bool}`:
    `entries` not yet delivered to the group (after its last-delivered id), `seconds` the age
    of the oldest of them (from its stream id, against the Redis clock; 0 when none),
    `pending` delivered but unacknowledged entries. Counting stops at `max_count` entries
    (then `truncated` is true). All zeros when the stream or group is missing, and then
    `missing` says which ("stream 'messages'" or "group 'deliveries'"; absent otherwise):
    zero lag of a missing group is no evidence that anything was consumed.
    """
    stream, group = _names(stream, group, configuration, secrets)
    client, url = redis_client(redis_url, configuration, secrets)
    result = {"entries": 0, "seconds": 0.0, "pending": 0, "truncated": False}
    groups = _group_call(url, stream, group, client.xinfo_groups, stream)
    info = next((g for g in groups or [] if g["name"] == group), None)
    if info is None:
        missing = f"stream '{stream}'" if groups is None else f"group '{group}'"
        logger.info(f"{missing} does not exist: lag reads 0 (flagged as missing)")
        return {**result, "missing": missing}
    result["pending"] = int(info["pending"])
    last_id = info["last-delivered-id"]
    first = _call(url, client.xrange, stream, f"({last_id}", "+", 1)
    if not first:
        return result
    now_ms = _redis_now_ms(client, url)
    result["seconds"] = round(max(0, now_ms - int(first[0][0].split("-")[0])) / 1000.0, 3)
    if info.get("lag") is not None:  # Redis 7+: exact and O(1)
        result["entries"] = int(info["lag"])
        return result
    counted, start = 0, f"({last_id}"
    while True:
        want = min(_SCAN_CHUNK, max_count - counted)
        if want <= 0:
            result["truncated"] = bool(_call(url, client.xrange, stream, start, "+", 1))
            break
        page = _call(url, client.xrange, stream, start, "+", want)
        counted += len(page)
        if len(page) < want:
            break
        start = "(" + page[-1][0]
    result["entries"] = counted
    return result


def consumer_lag_entries(
    stream: str = None,
    group: str = None,
    max_count: int = 100000,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Number of stream entries not yet delivered to the group (see `consumer_lag`)."""
    return consumer_lag(stream, group, max_count, redis_url, configuration, secrets)["entries"]


def consumer_lag_seconds(
    stream: str = None,
    group: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Age in seconds of the oldest entry not yet delivered to the group (0 when none)."""
    return consumer_lag(stream, group, 1, redis_url, configuration, secrets)["seconds"]


def dead_letter_count(
    dead_stream: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """
    Number of entries in the dead-letter stream (poison messages the consumer gave up on);
    `dead_stream` defaults to the `messaging_dead_stream` configuration key. 0 when missing.
    """
    dead_stream = lookup("messaging_dead_stream", configuration, secrets, dead_stream)
    client, url = redis_client(redis_url, configuration, secrets)
    return _call(url, client.xlen, dead_stream)


def _redis_now_ms(client: redis.Redis, url: str) -> int:
    # the Redis clock generated the stream ids, so lag in seconds does not depend on ours
    seconds, micros = _call(url, client.time)
    return int(seconds) * 1000 + int(micros) // 1000


def wait_for_consumer_backlog(
    min_entries: int,
    timeout_s: float = 60.0,
    stream: str = None,
    group: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Wait until at least `min_entries` stream entries wait undelivered to the group (a paused
    or slowed consumer's backlog), so the fault that follows strikes a pipeline with work in
    flight, not an idle one. Returns `{"entries", "waited_s"}`; raises `ActivityFailed` after
    `timeout_s` (the load is not flowing: nothing to strike).
    """
    import time

    started = time.monotonic()
    while True:
        entries = consumer_lag_entries(stream, group, 100000, redis_url, configuration, secrets)
        waited = round(time.monotonic() - started, 2)
        if entries >= int(min_entries):
            logger.info(f"backlog of {entries} entries after {waited:g}s")
            return {"entries": entries, "waited_s": waited}
        if waited > float(timeout_s):
            raise ActivityFailed(
                f"only {entries} entries waited for the consumer group after {timeout_s:g}s "
                f"(need {min_entries}): is the load running and the consumer paused?"
            )
        time.sleep(0.1)

"""The reference ledger's accounting (the platform file's `evidence.sql`, schema ``msgstack``):
every message of a run matched to the deliveries ledger, the lost ones located (outbox, stream,
pending entries), duplicates and k6's accepted count cross-checked. The engine behind
`chaosmessaging.probes.accounting.message_accounting`; no Chaos Toolkit activity here.
"""

from __future__ import annotations

import time
from collections import Counter

import redis
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging.clients.postgres import pg_fetch
from chaosmessaging.clients.redis import redis_client, redis_unreachable
from chaosmessaging.config import lookup
from chaosmessaging.clients.k6summary import summary_stat
from chaosmessaging.verdicts import Verdict, verdict

__all__ = ["PLACES", "ledger_accounting"]

_COUNTS = """
SELECT count(*) AS acknowledged,
       count(d.message_id) AS delivered,
       count(*) FILTER (WHERE d.redeliveries > 0) AS redelivered,
       count(*) FILTER (WHERE $2::float8 IS NOT NULL
                        AND d.delivered_at - m.created_at > make_interval(secs => $2::float8))
         AS late
FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id
WHERE starts_with(m.client_msg_id, $1)
"""

# duplicates are impossible while `deliveries.message_id` is the primary key; counted anyway
# so a platform whose ledger lacks that key is caught rather than trusted
_DUPLICATED = """
SELECT count(*) FROM (
  SELECT d.message_id FROM deliveries d JOIN messages m ON m.id = d.message_id
  WHERE starts_with(m.client_msg_id, $1) GROUP BY d.message_id HAVING count(*) > 1) AS twice
"""

_LOST = """
WITH lost AS (
  SELECT m.id, m.client_msg_id, m.created_at
  FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id
  WHERE starts_with(m.client_msg_id, $1) AND d.message_id IS NULL)
SELECT lost.client_msg_id, o.id AS outbox_id, o.dispatched_at IS NOT NULL AS dispatched,
       o.parked_at IS NOT NULL AS parked, o.dead_at IS NOT NULL AS dead, o.stream_id
FROM lost LEFT JOIN LATERAL (
  SELECT * FROM outbox WHERE outbox.message_id = lost.id ORDER BY outbox.id DESC LIMIT 1) o
  ON true
ORDER BY lost.created_at, lost.client_msg_id
LIMIT $2
"""

# where a lost message was last seen, in pipeline order
PLACES = ("undispatched", "parked", "dead", "in_stream", "pending", "nowhere")


_IN_RUN = """
SELECT count(*) FROM messages WHERE id = ANY($1::uuid[]) AND starts_with(client_msg_id, $2)
"""


def ledger_accounting(
    prefix: str,
    k6_summaries: list[str],
    run_id: str,
    expected: bool,
    settle_timeout: float,
    poll_interval: float,
    late_after_s: float | None,
    accepted_metric: str,
    max_ids: int,
    check_stream: bool,
    stream_scan_max: int,
    place_scan_max: int,
    dsn: str | None,
    configuration: Configuration,
    secrets: Secrets,
) -> Verdict:
    """The `message_accounting` verdict for the messages whose client id starts with `prefix`
    (`expected`: the run's loads ran, so zero acknowledged messages is a failure)."""
    started = time.monotonic()
    late = None if late_after_s is None else float(late_after_s)
    counts = _settled_counts(
        prefix, late, run_id, settle_timeout, poll_interval, dsn, configuration, secrets
    )
    missing = counts["acknowledged"] - counts["delivered"]
    places: dict[str, list[str]] = {place: [] for place in PLACES}
    lost_ids: list[str] = []
    if missing:
        rows = pg_fetch(
            _LOST, (prefix, max(int(place_scan_max), int(max_ids))), dsn, configuration, secrets
        )
        places = _last_seen(rows, configuration, secrets)
        lost_ids = [row["client_msg_id"] for row in rows[: int(max_ids)]]
    duplicated = pg_fetch(_DUPLICATED, (prefix,), dsn, configuration, secrets)[0][0]
    k6_accepted = None
    if k6_summaries:
        k6_accepted = sum(
            int(summary_stat(path, accepted_metric, "count", default=0)) for path in k6_summaries
        )
    result = {
        "run_id": run_id,
        "acknowledged": counts["acknowledged"],
        "delivered": counts["delivered"],
        "lost": missing,
        "lost_ids": lost_ids,
        "pending": len(places["undispatched"]) + len(places["parked"]),
        "parked": len(places["parked"]),
        "dead": len(places["dead"]),
        "last_seen": {place: len(ids) for place, ids in places.items()},
        "last_seen_ids": {place: ids[: int(max_ids)] for place, ids in places.items() if ids},
        "redelivered": counts["redelivered"],
        "duplicated": int(duplicated),
        "late": None if late is None else counts["late"],
        "k6_accepted": k6_accepted,
        "api_acknowledged_missing": (
            None if k6_accepted is None else max(0, k6_accepted - counts["acknowledged"])
        ),
        "stream_duplicates": (
            _stream_duplicates(prefix, stream_scan_max, dsn, configuration, secrets)
            if check_stream
            else None
        ),
        "settled_s": round(time.monotonic() - started, 3),
    }
    problems = _problems(result, prefix, expected)
    result = verdict(
        not problems,
        "; ".join(problems) or f"all {counts['acknowledged']} acknowledged messages delivered once",
        **result,
    )
    _warn(result, prefix, expected, settle_timeout)
    return result


def _settled_counts(
    prefix: str,
    late: float | None,
    run_id: str,
    settle_timeout: float,
    poll_interval: float,
    dsn: str | None,
    configuration: Configuration,
    secrets: Secrets,
) -> dict:
    """The run's counts (acknowledged, delivered, redelivered, late) once every acknowledged
    message is delivered, or when waiting `poll_interval` more would pass `settle_timeout`."""
    started = time.monotonic()
    while True:
        counts = pg_fetch(_COUNTS, (prefix, late), dsn, configuration, secrets)[0]
        missing = counts["acknowledged"] - counts["delivered"]
        elapsed = time.monotonic() - started
        if missing == 0 or elapsed + poll_interval > settle_timeout:
            return counts
        logger.debug(f"run {run_id}: {missing} messages not delivered yet, waiting")
        time.sleep(poll_interval)


def _problems(result: dict, prefix: str, expected: bool) -> list[str]:
    """What fails the verdict; after a load, zero acknowledged messages is no proof of zero
    loss: it fails too."""
    problems = []
    acknowledged, missing = result["acknowledged"], result["lost"]
    if acknowledged == 0 and expected:
        problems.append(f"no message of this run ('{prefix}') reached the database")
    if missing:
        seen = ", ".join(
            f"{n} {place.replace('_', ' ')}" for place, n in result["last_seen"].items() if n
        )
        problems.append(
            f"{missing} of {acknowledged} acknowledged messages lost (last seen: {seen})"
        )
    if result["duplicated"]:
        problems.append(f"{result['duplicated']} delivered twice")
    if result["api_acknowledged_missing"]:
        problems.append(
            f"{result['api_acknowledged_missing']} accepted by the API (k6) but "
            "missing from the database"
        )
    return problems


def _warn(result: dict, prefix: str, expected: bool, settle_timeout: float) -> None:
    """Say in the log what the operator should look at: the wrong run, the lost ids, the gap
    between k6's count and the database's."""
    run_id, acknowledged, missing = result["run_id"], result["acknowledged"], result["lost"]
    if acknowledged == 0 and expected:
        logger.warning(
            f"run {run_id}: no message has a client_msg_id starting with "
            f"'{prefix}' — wrong run id, or the load never reached the API?"
        )
    if missing:
        seen = ", ".join(f"{n} {place}" for place, n in result["last_seen"].items() if n)
        logger.warning(
            f"run {run_id}: {missing} of {acknowledged} messages not "
            f"delivered after {settle_timeout}s (last seen: {seen}); lost ids: "
            f"{result['lost_ids']}"
        )
    if result["api_acknowledged_missing"]:
        logger.warning(
            f"run {run_id}: k6 counted {result['k6_accepted']} accepted messages but the "
            f"database holds {acknowledged}"
        )


def _stream_duplicates(
    prefix: str, scan_max: int, dsn: str, configuration: Configuration, secrets: Secrets
) -> int:
    """How many of the run's messages appear more than once in the (possibly trimmed) stream."""
    stream = lookup("messaging_stream", configuration, secrets)
    client, url = redis_client(None, configuration, secrets)
    seen: Counter = Counter()
    start, scanned = "-", 0
    try:
        while scanned < scan_max:
            want = min(1000, scan_max - scanned)
            page = client.xrange(stream, start, "+", want)
            seen.update(fields.get("message_id") for _, fields in page)
            scanned += len(page)
            if len(page) < want:
                break
            start = "(" + page[-1][0]
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise redis_unreachable(url, error) from None
    twice = [message_id for message_id, count in seen.items() if message_id and count > 1]
    if not twice:
        return 0
    return int(pg_fetch(_IN_RUN, (twice, prefix), dsn, configuration, secrets)[0][0])


def _last_seen(rows: list, configuration: Configuration, secrets: Secrets) -> dict[str, list[str]]:
    """Sort lost messages (rows of `_LOST`) by where they were last seen; published ones are
    looked up in the stream and the group's pending entries (one pipeline)."""
    places: dict[str, list[str]] = {place: [] for place in PLACES}
    published = []
    for row in rows:
        if row["outbox_id"] is None:
            places["nowhere"].append(row["client_msg_id"])
        elif row["dead"]:
            places["dead"].append(row["client_msg_id"])
        elif not row["dispatched"]:
            places["parked" if row["parked"] else "undispatched"].append(row["client_msg_id"])
        elif not row["stream_id"]:
            places["nowhere"].append(row["client_msg_id"])  # "dispatched" without an entry
        else:
            published.append(row)
    if not published:
        return places
    stream = lookup("messaging_stream", configuration, secrets)
    group = lookup("messaging_group", configuration, secrets)
    client, url = redis_client(None, configuration, secrets)
    try:
        pipe = client.pipeline(transaction=False)
        for row in published:
            pipe.xrange(stream, row["stream_id"], row["stream_id"], count=1)
            pipe.xpending_range(stream, group, row["stream_id"], row["stream_id"], 1)
        replies = pipe.execute(raise_on_error=False)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise redis_unreachable(url, error) from None
    for n, row in enumerate(published):
        entry, pending = replies[2 * n], replies[2 * n + 1]
        if isinstance(pending, list) and pending:
            places["pending"].append(row["client_msg_id"])
        elif isinstance(entry, list) and entry:
            places["in_stream"].append(row["client_msg_id"])
        else:
            places["nowhere"].append(row["client_msg_id"])
    return places

"""PostgreSQL probes: the outbox (backlog, outbox DLQ, dispatch delay) and users' own
read-only SQL.

Tables follow docs/reference-stack.md: an `outbox` row is undispatched while `dispatched_at` is
null, and parked (in the outbox DLQ, waiting for replay after a Redis failure) while
`parked_at` is also set. The DSN comes from `messaging_pg_dsn`; it is redacted in messages.
Every query runs in a READ ONLY transaction.
"""

from decimal import Decimal

from chaoslib.types import Configuration, Secrets

from chaosmessaging.clients.postgres import pg_fetch

__all__ = [
    "outbox_backlog",
    "outbox_oldest_undispatched_seconds",
    "outbox_parked",
    "query_scalar",
]


def outbox_backlog(
    dsn: str = None, configuration: Configuration = None, secrets: Secrets = None
) -> int:
    """
    Number of outbox rows not yet dispatched to the stream (parked rows included): messages
    the API acknowledged that consumers cannot have seen yet.
    """
    rows = pg_fetch(
        "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL", (), dsn, configuration, secrets
    )
    return int(rows[0][0])


def outbox_parked(
    dsn: str = None, configuration: Configuration = None, secrets: Secrets = None
) -> int:
    """
    Size of the outbox DLQ: rows parked after a Redis failure and not yet dispatched. It must
    drain back to 0 once Redis has recovered.
    """
    rows = pg_fetch(
        "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL AND parked_at IS NOT NULL",
        (),
        dsn,
        configuration,
        secrets,
    )
    return int(rows[0][0])


def outbox_oldest_undispatched_seconds(
    dsn: str = None, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """
    Age in seconds of the oldest undispatched outbox row (0 when the outbox is drained),
    measured on the database clock: the dispatcher's lag as the database sees it.
    """
    rows = pg_fetch(
        "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) "
        "FROM outbox WHERE dispatched_at IS NULL",
        (),
        dsn,
        configuration,
        secrets,
    )
    return round(max(0.0, float(rows[0][0])), 3)


def query_scalar(
    sql: str,
    args: list = None,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
):
    """
    First column of the first row of your own read-only `sql` (with `$1, $2...` bound to
    `args`), or null when it returns no row. Runs in a READ ONLY transaction, so a
    statement that writes fails. Numeric values come back as numbers, timestamps as ISO text.
    """
    rows = pg_fetch(sql, args or (), dsn, configuration, secrets)
    if not rows:
        return None
    return _jsonable(rows[0][0])


def _jsonable(value):
    # journals are JSON: keep numbers numeric, turn the rest into their text form
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)

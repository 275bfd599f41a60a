"""``python -m msgstack seed-messages --rows N``: make the messages table large, for plan test 13.

An online migration is only tested when building its index takes real time, so the table must
hold many rows (nightly: millions). Seeded rows are ordinary messages with a small ciphertext and
``client_msg_id`` ``seed:<n>``; they have no outbox row, so nothing dispatches or delivers them,
and accounting (which selects a run's own ids) never sees them. `--rows` is the TARGET count of
seeded rows: a second run with the same figure adds nothing, a larger one adds the difference.
Rows are generated server-side (``generate_series``) in batches, each its own transaction.
"""

from __future__ import annotations

import logging
import time

from msgstack import migrate

__all__ = ["seed"]

log = logging.getLogger("msgstack.seed_messages")

COUNT_SQL = "SELECT coalesce(max(substr(client_msg_id, 6)::bigint), 0) FROM messages " + (
    "WHERE client_msg_id LIKE 'seed:%'"
)
INSERT_SQL = """
INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, size_bytes, created_at)
SELECT gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad(to_hex(n % $3), 12, '0'))::uuid,
       'seed:' || n,
       decode(md5(n::text), 'hex'),
       16,
       now() - make_interval(secs => n % 86400)
FROM generate_series($1::bigint, $2::bigint) AS n
ON CONFLICT (client_msg_id) DO NOTHING
"""


async def seed(dsn: str, rows: int, conversations: int = 1000, batch: int = 100_000) -> int:
    """Add seeded rows until `rows` exist; return how many were added."""
    conn = await migrate._connect(dsn)  # waits for PostgreSQL like the migrator does
    try:
        have = await conn.fetchval(COUNT_SQL)
        started, added = time.monotonic(), 0
        for first in range(have + 1, rows + 1, batch):
            last = min(first + batch - 1, rows)
            status = await conn.execute(INSERT_SQL, first, last, conversations)
            added += int(status.split()[-1])
            log.info("seeded %d/%d rows", last, rows)
        if added:
            # vacuumed and analysed now, so no autovacuum of the new rows runs (and holds up a
            # migration's lock) later, during the test
            await conn.execute("VACUUM (ANALYZE) messages")
        log.info(
            "messages holds %d seeded rows (%d added in %.1fs)",
            max(have, rows),
            added,
            time.monotonic() - started,
        )
        return added
    finally:
        await conn.close(timeout=2)

"""The dispatcher: moves outbox rows to the Redis stream, without ever losing one.

Loop: claim a batch of undispatched rows (FOR UPDATE SKIP LOCKED, so several dispatchers can run),
XADD them in one pipeline, mark them dispatched in the same transaction. When Redis fails, the batch
is parked (the outbox DLQ: ``parked_at`` + ``last_error``) and replayed once Redis answers again.

Redis may also come back from a restart EMPTY, taking entries that were published but not yet
consumed with it. A sweep walks the outbox behind a watermark (every row below it is delivered),
looks up published-but-undelivered rows in the stream, and re-dispatches those whose entry vanished.
The consumer's ledger absorbs the duplicates this at-least-once scheme can produce.

Every PostgreSQL and Redis call goes through the storage adapters (msgstack.storage): a batch's
claim, publish and mark are one unit of work on one pooled connection (not retried by the
adapter: the loop claims again), the rest idempotent statements and pipelines.

After a claim that did not fill a batch the loop waits MSGSTACK_DISPATCH_POLL_MS (100 ms) before
the next one: a message waits at most that long in the outbox, and under load each claim carries
that many milliseconds of messages. Every claim, XADD pipeline and mark costs the same whatever
its size, and so does the consumer's and the gateway's read of what it published: at 1,000
messages/s on two cores the pipeline (these three, their PostgreSQL and Redis work, the proxy)
cost 0.19 ms of CPU per message with a 20 ms wait, 0.12 with 50 ms and 0.08 with 100 ms
(docs/performance.md). Batches of 100 ms reach the consumer and the gateway as bursts: the
gateway takes a stream batch whole before judging a socket slow. An idle dispatcher claims with
one indexed peek per wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import asyncpg
from redis.exceptions import RedisError

from msgstack import db, metrics, mutants, streams
from msgstack.outage import Outage, pause, retry_after
from msgstack.service import Resources

__all__ = ["Dispatcher", "run"]

log = logging.getLogger("msgstack.dispatcher")

BATCH = 200
PUBLISH_TIMEOUT = 3.0
LAG_EVERY = 1.0
SWEEP_EVERY = 2.0
SWEEP_GRACE = timedelta(seconds=2)  # rows published more recently are certainly still in flight
SWEEP_CHUNK = 2000
SWEEP_CHUNKS = 10
# Only rows Redis keeps refusing (an error reply, not an outage) are ever given up on.
MAX_REFUSED_ATTEMPTS = 50

CLAIM_SQL = """
SELECT o.id, o.message_id, m.conversation_id, extract(epoch FROM o.created_at)::float8 AS created_at
FROM outbox o JOIN messages m ON m.id = o.message_id
WHERE o.dispatched_at IS NULL AND o.dead_at IS NULL AND o.parked_at IS NULL
ORDER BY o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""
# `o.id = ANY($1)` besides the join: without it PostgreSQL joined the batch to a sequential scan
# of the whole outbox (every row ever written stays there) until the table grew past a few tens
# of thousands of rows: 705 scans reading 3.4 M rows in a 20 s run at 500/s. With it, the batch's
# rows come from the primary key at any size.
MARK_SQL = """
UPDATE outbox o
SET dispatched_at = now(), stream_id = u.sid, attempts = o.attempts + 1, last_error = NULL
FROM unnest($1::bigint[], $2::text[]) AS u(id, sid)
WHERE o.id = u.id AND o.id = ANY($1::bigint[])
"""
PARK_SQL = """
UPDATE outbox o
SET parked_at = now(), attempts = o.attempts + 1, last_error = $2,
    dead_at = CASE WHEN $3 AND o.attempts + 1 >= $4 THEN now() END
WHERE o.id = ANY($1::bigint[])
RETURNING o.id, o.dead_at IS NOT NULL AS dead
"""
REPLAY_SQL = """
UPDATE outbox SET parked_at = NULL
WHERE parked_at IS NOT NULL AND dispatched_at IS NULL AND dead_at IS NULL
"""
# After an empty claim the next poll first peeks without a transaction (one round trip instead
# of BEGIN, claim, COMMIT): an idle dispatcher peeks once per MSGSTACK_DISPATCH_POLL_MS.
PEEK_SQL = """
SELECT EXISTS (SELECT 1 FROM outbox
               WHERE dispatched_at IS NULL AND dead_at IS NULL AND parked_at IS NULL)
"""
LAG_SQL = """
SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox
WHERE dispatched_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT 1
"""
# The ledger is looked up per row (EXISTS on its primary key), not joined: the join's generic plan
# read the whole outbox and the whole ledger into a hash join on every chunk (12.6 ms at 10,000
# rows and growing with them), while only the chunk behind the watermark is wanted (7.5 ms at
# 300,000 rows against the join's 16.4 ms, same rows).
SWEEP_SQL = """
SELECT o.id, o.stream_id,
       (o.dead_at IS NOT NULL
        OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = o.message_id)) AS settled,
       o.dispatched_at < now() - $3::interval AS published_long_ago
FROM outbox o
WHERE o.id > $1
ORDER BY o.id
LIMIT $2
"""
REDISPATCH_SQL = """
UPDATE outbox o
SET dispatched_at = NULL, stream_id = NULL, last_error = 'stream entry vanished before delivery'
FROM unnest($1::bigint[], $2::text[]) AS u(id, sid)
WHERE o.id = u.id AND o.id = ANY($1::bigint[]) AND o.stream_id = u.sid
"""


class Dispatcher:
    def __init__(self, res: Resources) -> None:
        self.res = res
        self.stream = res.settings.stream
        self.postgres, self.redis_adapter = res.storage.postgres, res.storage.stream
        self.pg = Outage("postgres", log)
        self.redis_outage = Outage("redis", log)
        self.maybe_parked = True  # a previous run may have left parked rows
        self.watermark = 0
        self.next_lag = 0.0
        self.next_sweep = time.monotonic() + SWEEP_EVERY
        # MUTANT dispatcher_slow_idle_poll: seconds where milliseconds were meant
        self.idle_poll = (
            8.0 if mutants.on("dispatcher_slow_idle_poll") else res.settings.dispatch_poll_s
        )
        self.idle = False  # the last claim found nothing: peek before the next one

    async def run(self, stop: asyncio.Event) -> None:
        log.info("dispatching outbox to stream %r", self.stream)
        while not stop.is_set():
            try:
                if self.maybe_parked:
                    await self.replay_parked()
                published = await self.dispatch_batch()
                now = time.monotonic()
                if now >= self.next_lag:
                    self.next_lag = now + LAG_EVERY
                    await self.update_lag()
                if now >= self.next_sweep and not self.redis_outage.down:
                    self.next_sweep = now + SWEEP_EVERY
                    await self.sweep()
                self.pg.recovered()
            except asyncpg.UndefinedTableError:
                await pause(stop, self.pg.failed(str(db.SchemaMissing())))
                continue
            except db.TRANSIENT_ERRORS as exc:
                await pause(stop, self.pg.failed(db.describe(exc), retry_after(exc)))
                continue
            except asyncpg.PostgresError as exc:
                # e.g. a deadlock or lock timeout while a migration runs: the batch rolled back
                # and is claimed again; never a reason to stop dispatching.
                log.error("batch rolled back: %s", db.describe(exc))
                await pause(stop, self.pg.failed(db.describe(exc)))
                continue
            if self.redis_outage.down:
                await pause(stop, self.redis_outage.delay)
            elif published < BATCH:
                await pause(stop, self.idle_poll)

    async def dispatch_batch(self) -> int:
        """Publish one batch; return how many rows were published."""
        claimed, done = await self.postgres.run(self._claim_and_publish, idempotent=False)
        if not claimed:
            return 0
        if done is None:  # parked: Redis failed
            return 0
        self.redis_outage.recovered()
        metrics.DISPATCH_PUBLISHED.inc(done)
        return done

    async def _claim_and_publish(self, conn: asyncpg.Connection) -> tuple[bool, int | None]:
        """The batch's unit of work: peek when idle, claim, publish and mark (or park);
        (whether rows were claimed, what `_publish_claimed` answered)."""
        if self.idle and not await conn.fetchval(PEEK_SQL):
            return False, 0
        async with conn.transaction():
            rows = await conn.fetch(CLAIM_SQL, BATCH)
            self.idle = not rows
            if not rows:
                return False, 0
            return True, await self._publish_claimed(conn, rows)

    async def _publish_claimed(
        self, conn: asyncpg.Connection, rows: list[asyncpg.Record]
    ) -> int | None:
        """Publish claimed `rows` and mark (or park) them in the claim's transaction; return how
        many were published, or None when Redis failed and the batch was parked."""
        try:
            sent = time.monotonic()
            results = await self.publish(rows)
            if mutants.on("dispatcher_sticky_backoff") and time.monotonic() - sent > 0.15:
                self.idle_poll = 1.0  # MUTANT: backs off on a slow Redis, forever
        except (*streams.TRANSIENT_ERRORS, RedisError) as exc:
            why = db.describe(exc)
            if mutants.on("dispatcher_mark_on_failure"):  # MUTANT: forgets the batch
                await conn.execute(MARK_SQL, [r["id"] for r in rows], [None] * len(rows))
                return None
            await self.park(conn, [r["id"] for r in rows], why, refused=False)
            self.redis_outage.failed(why)
            return None
        done = [(r["id"], sid) for r, sid in zip(rows, results) if not isinstance(sid, Exception)]
        refused = [(r["id"], sid) for r, sid in zip(rows, results) if isinstance(sid, Exception)]
        if done:
            await conn.execute(MARK_SQL, [i for i, _ in done], [s.decode() for _, s in done])
        for row_id, exc in refused:
            await self.park(conn, [row_id], db.describe(exc), refused=True)
        return len(done)

    async def publish(self, rows: list[asyncpg.Record]) -> list:
        """XADD the batch in one pipeline through the storage layer's stream adapter (timeout,
        retries, breaker: an open breaker raises BreakerOpen, a ConnectionError, so the batch is
        parked like for any Redis outage)."""

        async def xadd_all(rc) -> list:
            async with rc.pipeline(transaction=False) as pipe:
                for r in rows:
                    pipe.xadd(
                        self.stream,
                        streams.encode(
                            r["message_id"], r["conversation_id"], r["id"], r["created_at"]
                        ),
                    )
                return await pipe.execute(raise_on_error=False)

        return await self.redis_adapter.run(xadd_all, timeout=PUBLISH_TIMEOUT)

    async def park(self, conn: asyncpg.Connection, ids: list[int], why: str, refused: bool) -> None:
        parked = await conn.fetch(PARK_SQL, ids, why, refused, MAX_REFUSED_ATTEMPTS)
        dead = sum(1 for r in parked if r["dead"])
        metrics.DISPATCH_DLQ.labels("redis").inc(len(parked) - dead)
        self.maybe_parked = True
        log.warning("parked %d outbox rows: %s", len(parked) - dead, why)
        if dead:
            metrics.OUTBOX_DEAD.inc(dead)
            log.error(
                "gave up on %d outbox rows after %d refused attempts: %s",
                dead,
                MAX_REFUSED_ATTEMPTS,
                why,
            )

    async def replay_parked(self) -> None:
        """Release parked rows once Redis answers again; they are then published in id order."""
        try:
            await self.redis_adapter.run(lambda r: r.ping(), timeout=1.0)
        except (*streams.TRANSIENT_ERRORS, RedisError) as exc:
            self.redis_outage.failed(db.describe(exc), retry_after(exc))
            return
        self.redis_outage.recovered()
        if mutants.on("dispatcher_no_replay"):  # MUTANT: parked rows stay parked for ever
            self.maybe_parked = False
            return
        status = await self.postgres.run(lambda c: c.execute(REPLAY_SQL))
        count = int(status.split()[-1])
        if count:
            metrics.DISPATCH_REPLAYED.inc(count)
            log.info("redis answers again: replaying %d parked outbox rows", count)
        self.maybe_parked = False

    async def update_lag(self) -> None:
        age = await self.postgres.run(lambda c: c.fetchval(LAG_SQL))
        metrics.DISPATCH_LAG.set(max(age or 0.0, 0.0))

    async def sweep(self) -> None:
        """Re-dispatch published, undelivered rows whose stream entry no longer exists."""
        for _ in range(SWEEP_CHUNKS):
            rows = await self.postgres.run(
                lambda c: c.fetch(SWEEP_SQL, self.watermark, SWEEP_CHUNK, SWEEP_GRACE)
            )
            blocked = False
            suspects = []
            for r in rows:
                if r["settled"]:
                    if not blocked:
                        self.watermark = r["id"]
                    continue
                blocked = True
                if r["stream_id"] is not None and r["published_long_ago"]:
                    suspects.append(r)
            if suspects:
                await self.redispatch_vanished(suspects)
            if blocked or len(rows) < SWEEP_CHUNK:
                return

    async def redispatch_vanished(self, suspects: list[asyncpg.Record]) -> None:

        async def look_up(rc) -> list:
            async with rc.pipeline(transaction=False) as pipe:
                for r in suspects:
                    pipe.xrange(self.stream, r["stream_id"], r["stream_id"], count=1)
                return await pipe.execute()

        try:
            found = await self.redis_adapter.run(look_up, timeout=PUBLISH_TIMEOUT)
        except (*streams.TRANSIENT_ERRORS, RedisError) as exc:
            self.redis_outage.failed(db.describe(exc))
            return
        lost = [r for r, entries in zip(suspects, found) if not entries]
        if not lost:
            return
        ids, sids = [r["id"] for r in lost], [r["stream_id"] for r in lost]
        status = await self.postgres.run(lambda c: c.execute(REDISPATCH_SQL, ids, sids))
        count = int(status.split()[-1])
        metrics.DISPATCH_REDISPATCHED.inc(count)
        log.warning(
            "%d published outbox rows lost their stream entry before delivery (Redis "
            "restarted empty?); re-dispatching them",
            count,
        )


async def run(res: Resources, stop: asyncio.Event) -> None:
    await Dispatcher(res).run(stop)

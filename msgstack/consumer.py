"""The consumer: records each stream entry in the deliveries ledger, then acknowledges it.

At-least-once in, exactly-once in the ledger: an entry is XACKed only after its deliveries row is
committed, and a repeated entry (redelivery, re-dispatch) bumps ``redeliveries`` instead of adding a
row. Entries left pending by a consumer that died (any name) are taken over with XAUTOCLAIM on start
and every few seconds. Poison entries (unparsable, or refused by the ledger more than
MAX_DELIVERIES times) go to the dead-letter stream and are acknowledged there.

Readiness reflects progress: the consumer adds a "progress" check to /readyz that fails when
entries wait (pending, or not yet read by the group) and nothing was acknowledged for
MSGSTACK_STALL_SECONDS; a consumer stuck on a locked table or a hung write is not ready even
though Redis and PostgreSQL answer.

Every Redis and PostgreSQL call goes through the storage adapters (msgstack.storage: timeouts,
retries of lost connections, breakers), one call per batch; the Redis commands keep the bound
the client's socket timeout gave them (streams.SOCKET_TIMEOUT, plus BLOCK for the group read).
While a breaker is open the loop waits until its trial is due, not longer (`Outage.failed`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import asyncpg
from redis.exceptions import RedisError, ResponseError

from msgstack import db, health, metrics, mutants, streams
from msgstack.outage import Outage, pause, retry_after
from msgstack.service import Resources

__all__ = ["Consumer", "run"]

log = logging.getLogger("msgstack.consumer")

BATCH = 200
BLOCK_MS = 1000
RECLAIM_EVERY = 2.0
RECLAIM_ROUNDS = 10  # XAUTOCLAIM pages per pass, so one pass stays short
MAX_DELIVERIES = 5
READ_TIMEOUT = BLOCK_MS / 1000 + streams.SOCKET_TIMEOUT

# One row per message: duplicates in the batch are folded into `extra` beforehand because
# ON CONFLICT DO UPDATE cannot touch the same row twice in one statement.
RECORD_SQL = """
INSERT INTO deliveries (message_id, stream_id, consumer, redeliveries)
SELECT u.message_id, u.stream_id, $3, u.extra
FROM unnest($1::uuid[], $2::text[], $4::int[]) AS u(message_id, stream_id, extra)
ON CONFLICT (message_id) DO UPDATE
SET redeliveries = deliveries.redeliveries + EXCLUDED.redeliveries + 1
RETURNING (xmax = 0) AS inserted
"""

Pending = tuple[bytes, dict[bytes, bytes] | None]  # (stream id, fields)


class Consumer:
    def __init__(self, res: Resources) -> None:
        self.res = res
        s = res.settings
        self.stream, self.group, self.name = s.stream, s.group, s.consumer_name
        self.redis_adapter, self.postgres = res.storage.stream, res.storage.postgres
        self.pg = Outage("postgres", log)
        self.redis_outage = Outage("redis", log)
        self.group_ready = False
        self.next_reclaim = 0.0  # reclaim first thing on start
        # Checking more often than entries can become idle would find nothing new.
        self.reclaim_every = min(RECLAIM_EVERY, max(s.reclaim_idle_ms / 1000, 0.1))
        # last time the consumer acknowledged entries or found nothing new to read
        self.last_progress = time.monotonic()
        res.checks["progress"] = self.check_progress
        self.mutant_backoff = 0.0  # MUTANT consumer_sticky_backoff only
        self.mutant_cache: list[bytearray] = []  # MUTANT consumer_unbounded_cache only

    async def run(self, stop: asyncio.Event) -> None:
        log.info("consuming stream %r as %r in group %r", self.stream, self.name, self.group)
        while not stop.is_set():
            try:
                if not self.group_ready:
                    await self.ensure_group()
                if self.mutant_backoff:  # MUTANT consumer_sticky_backoff: never reset
                    await asyncio.sleep(self.mutant_backoff)
                if time.monotonic() >= self.next_reclaim:
                    if not mutants.on("consumer_no_reclaim"):  # MUTANT: never reclaims
                        await self.reclaim(stop)
                    await self.sample_pel()
                    self.next_reclaim = time.monotonic() + self.reclaim_every
                reply = await self.redis_adapter.run(
                    lambda r: r.xreadgroup(
                        self.group, self.name, {self.stream: ">"}, count=BATCH, block=BLOCK_MS
                    ),
                    READ_TIMEOUT,
                )
                self.redis_outage.recovered()
                entries = reply[0][1] if reply else []
                if entries:
                    await self.process(entries, stop)
                else:
                    self.last_progress = time.monotonic()
                    metrics.CONSUMER_LAG.set(0)
            except ResponseError as exc:
                if streams.is_nogroup(exc):
                    log.warning("stream or group vanished (Redis restarted empty?): recreating")
                    self.group_ready = False
                    continue
                await pause(stop, self.redis_outage.failed(db.describe(exc)))
            except (*streams.TRANSIENT_ERRORS, RedisError) as exc:
                self.group_ready = False
                await pause(stop, self.redis_outage.failed(db.describe(exc), retry_after(exc)))

    async def check_progress(self) -> str:
        """/readyz "progress": "ok", or how many entries wait and for how long nothing was
        acknowledged (MSGSTACK_STALL_SECONDS)."""
        limit = self.res.settings.stall_seconds
        quiet = time.monotonic() - self.last_progress
        if quiet < limit:
            return "ok"
        try:
            async with asyncio.timeout(health.CHECK_TIMEOUT):
                pending, unread = await self.backlog()
        except Exception as exc:  # noqa: BLE001 - a readiness answer, never a crash
            return f"no progress for {quiet:.0f}s and the backlog is unknown ({db.describe(exc)})"
        if not pending and not unread:
            return "ok"
        return (
            f"stalled: {pending} pending and {'some' if unread else 'no'} unread entries, nothing "
            f"acknowledged for {quiet:.0f}s (MSGSTACK_STALL_SECONDS={limit})"
        )

    async def backlog(self) -> tuple[int, bool]:
        """(entries pending in the group, whether the stream holds entries it has not read)."""
        pending = (await self._redis(lambda r: r.xpending(self.stream, self.group)))["pending"]
        groups = await self._redis(lambda r: r.xinfo_groups(self.stream))
        last = next(
            (g["last-delivered-id"] for g in groups if _text(g["name"]) == self.group), "0-0"
        )
        after = await self._redis(lambda r: r.xrange(self.stream, min=f"({_text(last)}", count=1))
        return int(pending), bool(after)

    async def _redis(self, command, retry: bool = True):
        """One Redis command (or pipeline) `command(client)` through the stream adapter."""
        return await self.redis_adapter.run(command, streams.SOCKET_TIMEOUT, retry)

    async def ensure_group(self) -> None:
        try:
            await self._redis(
                lambda r: r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            )
            log.info("created consumer group %r on stream %r", self.group, self.stream)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        self.group_ready = True

    async def reclaim(self, stop: asyncio.Event) -> None:
        """Take over entries idle longer than MSGSTACK_RECLAIM_IDLE_MS, whoever held them."""
        start = "0-0"
        for _ in range(RECLAIM_ROUNDS):
            reply = await self._redis(
                lambda r, start=start: r.xautoclaim(
                    self.stream,
                    self.group,
                    self.name,
                    self.res.settings.reclaim_idle_ms,
                    start_id=start,
                    count=BATCH,
                )
            )
            start, entries = reply[0], reply[1]
            if entries:
                metrics.CONSUMER_PEL_RECLAIMED.inc(len(entries))
                log.info("reclaimed %d idle pending entries", len(entries))
                await self.process(entries, stop)
            if start in (b"0-0", "0-0") or stop.is_set():
                return

    async def sample_pel(self) -> None:
        summary = await self._redis(lambda r: r.xpending(self.stream, self.group))
        metrics.CONSUMER_PEL_SIZE.set(summary["pending"])

    async def process(self, entries: list[Pending], stop: asyncio.Event) -> None:
        """Record and acknowledge `entries`; anything not recorded stays pending for a retry."""
        good: list[tuple[bytes, streams.Entry]] = []
        for entry_id, fields in entries:
            try:
                good.append((entry_id, streams.decode(fields)))
            except streams.BadEntry as exc:
                await self.dead_letter(entry_id, fields, "unparsable", str(exc))
        if not good:
            return
        if mutants.on("consumer_ack_before_record"):  # MUTANT: a kill here loses the batch
            await self._redis(lambda r: r.xack(self.stream, self.group, *[i for i, _ in good]))
        recorded = await self.record_with_retry(good, stop)
        if recorded:
            acked = time.monotonic()
            await self._redis(lambda r: r.xack(self.stream, self.group, *[i for i, _ in recorded]))
            self.last_progress = time.monotonic()
            if mutants.on("consumer_sticky_backoff") and time.monotonic() - acked > 0.15:
                self.mutant_backoff = 0.5  # MUTANT: backs off on a slow Redis, forever
            if mutants.on("consumer_unbounded_cache"):  # MUTANT: 16 KiB kept per message
                self.mutant_cache.extend(bytearray(16384) for _ in recorded)
            metrics.CONSUMER_DELIVERED.inc(len(recorded))
            oldest = min(e.created_at for _, e in recorded)
            metrics.CONSUMER_LAG.set(max(time.time() - oldest, 0.0))

    async def record_with_retry(
        self, good: list[tuple[bytes, streams.Entry]], stop: asyncio.Event
    ) -> list[tuple[bytes, streams.Entry]]:
        """Write the batch to the ledger, waiting out PostgreSQL outages until asked to stop."""
        while True:
            try:
                await self.record(good)
                self.pg.recovered()
                return good
            except db.TRANSIENT_ERRORS as exc:
                # MUTANT: a lost or refused connection is taken for a bad batch (timeouts retry)
                if mutants.on("consumer_dead_letters_on_lost_connection") and not isinstance(
                    exc, TimeoutError
                ):
                    for entry_id, entry in good:
                        fields = {b"message_id": str(entry.message_id).encode()}
                        await self.dead_letter(entry_id, fields, "unrecordable", db.describe(exc))
                    return []
                await pause(stop, self.pg.failed(db.describe(exc), retry_after(exc)))
                if stop.is_set():
                    return []  # left pending; reclaimed by whoever runs next
            except asyncpg.PostgresError:
                # One bad entry fails the whole statement: find it by recording one at a time.
                return await self.record_one_by_one(good)

    async def record(self, batch: list[tuple[bytes, streams.Entry]]) -> None:
        counts = collections.Counter(e.message_id for _, e in batch)
        first: dict = {}
        for entry_id, e in batch:
            first.setdefault(e.message_id, entry_id.decode())
        ids = list(first)
        inserted = await self.postgres.run(
            lambda c: c.fetch(
                RECORD_SQL,
                ids,
                [first[m] for m in ids],
                self.name,
                [counts[m] - 1 for m in ids],
                timeout=db.COMMAND_TIMEOUT,
            )
        )
        repeats = sum(1 for r in inserted if not r["inserted"]) + len(batch) - len(ids)
        if repeats:
            metrics.CONSUMER_REDELIVERED.inc(repeats)

    async def record_one_by_one(
        self, good: list[tuple[bytes, streams.Entry]]
    ) -> list[tuple[bytes, streams.Entry]]:
        recorded = []
        for entry_id, entry in good:
            try:
                await self.record([(entry_id, entry)])
                recorded.append((entry_id, entry))
            except asyncpg.PostgresError as exc:
                if isinstance(exc, db.TRANSIENT_ERRORS):
                    raise
                await self.maybe_dead_letter(entry_id, entry, db.describe(exc))
        return recorded

    async def maybe_dead_letter(self, entry_id: bytes, entry: streams.Entry, why: str) -> None:
        """Dead-letter an entry the ledger refused more than MAX_DELIVERIES times."""
        info = await self._redis(
            lambda r: r.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        )
        times = info[0]["times_delivered"] if info else 0
        if times > MAX_DELIVERIES:
            fields = {b"message_id": str(entry.message_id).encode()}
            await self.dead_letter(entry_id, fields, "max_deliveries", f"{times} deliveries: {why}")
        else:
            log.warning(
                "ledger refused entry %s (delivery %d of %d): %s",
                entry_id.decode(),
                times,
                MAX_DELIVERIES,
                why,
            )

    async def dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes] | None, reason: str, detail: str
    ) -> None:
        message_id = (fields or {}).get(b"message_id", b"")

        async def move(r) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    self.res.settings.dead_stream,
                    {
                        "message_id": message_id,
                        "reason": f"{reason}: {detail}"[:500],
                        "original_id": entry_id,
                    },
                )
                pipe.xack(self.stream, self.group, entry_id)
                await pipe.execute()

        await self._redis(move, retry=False)  # a repeated MULTI could dead-letter it twice
        metrics.CONSUMER_DEAD_LETTERS.labels(reason).inc()
        log.warning("dead-lettered entry %s (%s): %s", entry_id.decode(), reason, detail)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def run(res: Resources, stop: asyncio.Event) -> None:
    await Consumer(res).run(stop)

"""The participant cache of one API process, kept honest by invalidations over Redis Pub/Sub.

Each API worker process caches, per conversation, the set of its participants as a participant
loaded it (under row-level security, so a non-participant's load sees nothing and is not cached).
A participant change (add, remove, delete conversation) drops the entry in the writing process
and, once committed, is announced on a Pub/Sub channel; every process (the writer included)
drops its entry when the announcement arrives and records how long it took
(`messaging_participant_invalidation_delay_seconds`, published -> applied).

What keeps a removed user from being authorized by any process after the removal is acknowledged:
- the writer drops its own entry before answering, and announces before answering;
- a load that started before an invalidation of its conversation is not stored (generations);
- a process whose subscription is down (Redis outage, partition: noticed by PINGs on the
  subscription) empties its cache and answers from PostgreSQL until it is subscribed again;
- entries expire after MSGSTACK_PARTICIPANT_CACHE_TTL seconds in any case.

Misses of one conversation that come together (a cold start: hundreds at once) share one load
while the cache is online (`ParticipantCache._load`).

Hand-written because the rules above (generations, offline bypass) are the point of the exercise
and no maintained library offers a cross-process, Pub/Sub-invalidated asyncio cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import redis.asyncio as aioredis

from msgstack import db, metrics, mutants, streams
from msgstack.singleflight import SingleFlight

if TYPE_CHECKING:
    from msgstack.storage import CacheAdapter

__all__ = ["Lookup", "ParticipantCache", "announce", "listen"]

log = logging.getLogger("msgstack.participants")

PING_INTERVAL = 1.0  # how often the subscription proves it is alive
PING_DEADLINE = 3.0  # no message or pong for this long: treat the subscription as down
RETRY_DELAY = 0.5
MAX_GENERATIONS = 100_000
# runs a unit of work on a pooled connection (the storage adapter's `run`)
Runner = Callable[[Callable[[asyncpg.Connection], Awaitable[Any]]], Awaitable[Any]]
MEMBERS_SQL = "SELECT user_id FROM participants WHERE conversation_id = $1"


@dataclass(frozen=True)
class Lookup:
    """The participants of a conversation as the acting user may see them."""

    members: frozenset[uuid.UUID]
    hit: bool

    def allows(self, user_id: uuid.UUID) -> bool:
        return user_id in self.members


class ParticipantCache:
    """conversation id -> participant ids, with TTL, generations and an offline bypass."""

    def __init__(self, ttl: float, invalidation: bool = True) -> None:
        self.ttl = ttl
        self.invalidation = invalidation
        # Without invalidation (the participants_no_invalidation mutant: the writer forgets to
        # tell the other processes, the bug plan test 3 exists to find) the cache trusts itself.
        self.online = not invalidation
        self._entries: dict[uuid.UUID, tuple[frozenset[uuid.UUID], float]] = {}
        self._generations: dict[uuid.UUID, int] = {}
        self._epoch = 0
        self._loads: SingleFlight[tuple[frozenset[uuid.UUID], uuid.UUID]] = SingleFlight(
            "participants"
        )

    def get(self, conversation_id: uuid.UUID) -> frozenset[uuid.UUID] | None:
        if not self.online:
            return None
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._entries[conversation_id]
            return None
        return entry[0]

    def token(self, conversation_id: uuid.UUID) -> tuple[int, int]:
        """Taken before a load: the load is stored only if no invalidation came meanwhile."""
        return self._epoch, self._generations.get(conversation_id, 0)

    def put(
        self, conversation_id: uuid.UUID, members: frozenset[uuid.UUID], token: tuple[int, int]
    ) -> None:
        if mutants.on("participants_cache_never_fills"):  # MUTANT: every read is a miss
            return
        if self.online and token == self.token(conversation_id):
            self._entries[conversation_id] = (members, time.monotonic() + self.ttl)

    def drop(self, conversation_id: uuid.UUID) -> None:
        self._entries.pop(conversation_id, None)
        if len(self._generations) >= MAX_GENERATIONS:
            self.clear()
        self._generations[conversation_id] = self._generations.get(conversation_id, 0) + 1

    def clear(self) -> None:
        self._entries.clear()
        self._generations.clear()
        self._epoch += 1

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, run: Runner, conversation_id: uuid.UUID, user_id: uuid.UUID) -> Lookup:
        """Participants of `conversation_id` from the cache, else from PostgreSQL as `user_id`
        (`run` executes a unit of work on a pooled connection: the API passes its storage
        adapter's, so a miss waits no longer than the adapter's bounded acquire and is refused
        at once while its circuit breaker is open).

        Only a load by a participant is stored: under row-level security anyone else sees no
        participant at all, and that empty answer is about the viewer, not the conversation.
        """
        cached = self.get(conversation_id)
        if cached is not None:
            metrics.PARTICIPANT_CACHE_HITS.inc()
            return Lookup(cached, True)
        metrics.PARTICIPANT_CACHE_MISSES.inc()
        token = self.token(conversation_id)
        if self.online:  # misses of one generation share a load (see `_load`)
            (members, loader), joined = await self._loads.run(
                (conversation_id, token), lambda: self._load(run, conversation_id, user_id, token)
            )
            if not joined or loader in members:
                return Lookup(members, False)
            # the load was made by a non-participant, who sees no one: that answer is about the
            # viewer, not the conversation, so this caller loads for itself
        members, _ = await self._load(run, conversation_id, user_id, token)
        return Lookup(members, False)

    async def _load(
        self, run: Runner, conversation_id: uuid.UUID, user_id: uuid.UUID, token: tuple[int, int]
    ) -> tuple[frozenset[uuid.UUID], uuid.UUID]:
        """The participants as `user_id` sees them (stored when `user_id` is one), and who looked.

        Shared by the misses that come while it runs (`SingleFlight`), only while the cache is
        online and only within one generation of the conversation (the key holds `token`): a
        shared answer is then one load old at most and dropped by the same invalidation that
        would drop a cached entry, so it can be no staler than the cache itself. Offline (the
        subscription is down) every request loads for itself, as the module docstring promises.
        """

        async def load(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(MEMBERS_SQL, conversation_id)

        members = frozenset(r["user_id"] for r in await run(db.as_user_unit(user_id, load)))
        if user_id in members:
            self.put(conversation_id, members, token)
        return members, user_id


def _message(conversation_id: uuid.UUID) -> str:
    return json.dumps({"conversation_id": str(conversation_id), "published_at": time.time()})


async def announce(
    keys: CacheAdapter, channel: str, cache: ParticipantCache, conversation_id: uuid.UUID
) -> bool:
    """Drop the local entry and tell every API process to drop theirs (after the commit).

    Returns False when Redis could not be told; the other processes' subscriptions are then
    down as well (same Redis), so they answer from PostgreSQL until they resubscribe and clear.
    """
    cache.drop(conversation_id)
    if not cache.invalidation:
        return True  # the mutant: only the writing process forgets its entry
    try:
        message = _message(conversation_id)
        await keys.run(lambda r: r.publish(channel, message), streams.SOCKET_TIMEOUT)
    except streams.TRANSIENT_ERRORS as exc:
        log.warning("participant change of %s not announced: %s", conversation_id, exc)
        return False
    metrics.PARTICIPANT_INVALIDATIONS_PUBLISHED.inc()
    return True


def _apply(cache: ParticipantCache, data: bytes | str) -> None:
    try:
        doc = json.loads(data)
        conversation_id = uuid.UUID(doc["conversation_id"])
        published_at = float(doc["published_at"])
    except (ValueError, KeyError, TypeError):
        log.warning("ignored a malformed invalidation: %r", data[:200])
        return
    cache.drop(conversation_id)
    metrics.PARTICIPANT_INVALIDATION_DELAY.observe(max(0.0, time.time() - published_at))


async def listen(
    keys: CacheAdapter, channel: str, cache: ParticipantCache, stop: asyncio.Event
) -> None:
    """Apply invalidations until `stop`; while unsubscribed, keep the cache empty and bypassed."""
    if not cache.invalidation:
        log.warning("participant cache invalidation is OFF (mutant participants_no_invalidation)")
        await stop.wait()
        return
    while not stop.is_set():
        pubsub = keys.subscription()
        try:
            await pubsub.subscribe(channel)
            last_seen = time.monotonic()
            next_ping = last_seen + PING_INTERVAL
            while not stop.is_set():
                message = await pubsub.get_message(timeout=0.2)
                now = time.monotonic()
                if message is not None:
                    last_seen = now
                    kind = message["type"]
                    if kind == "subscribe":
                        cache.clear()  # anything cached before may have missed invalidations
                        cache.online = True
                        log.info("participant invalidations subscribed on %r", channel)
                    elif kind == "message":
                        if mutants.on("participants_slow_invalidation"):  # MUTANT: naps
                            await asyncio.sleep(0.3)
                        _apply(cache, message["data"])
                if now >= next_ping:
                    await pubsub.ping()
                    next_ping = now + PING_INTERVAL
                if now - last_seen > PING_DEADLINE:
                    raise TimeoutError(f"no answer on the subscription for {PING_DEADLINE:.0f}s")
        except (*streams.TRANSIENT_ERRORS, aioredis.RedisError) as exc:
            if cache.online:
                log.warning("participant invalidations unsubscribed (%s); cache bypassed", exc)
            cache.online = False
            cache.clear()
            try:
                await asyncio.wait_for(stop.wait(), RETRY_DELAY)
            except TimeoutError:
                pass
        finally:
            cache.online = cache.online and not stop.is_set()
            try:
                await asyncio.wait_for(pubsub.aclose(), 1.0)
            except Exception:  # noqa: BLE001 - the connection is gone either way
                pass

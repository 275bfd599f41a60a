"""Concurrent loads of one key run once: the callers that miss a cache together share one load.

At a cold start, or when a cached entry runs out, every request in flight misses at once: at
1,000 requests/s the first few hundred of an API worker each asked Redis for the same token and
PostgreSQL for the same conversation's participants (a cache stampede), and the burst of round
trips, pool growth and proxy traffic stalled the whole machine for a second or more. With
`SingleFlight` the first caller's load runs as a task, and every caller of the same key that comes
while it runs awaits that task instead of loading again.

A caller is shielded from the others: one that is cancelled (its client went away) cancels
neither the load nor anyone else's wait, and a load's error reaches every caller that waited for
it (each handles it as its own, e.g. a 503). The key says which loads may be shared: a cache puts
whatever makes an answer different (a generation, the viewer) into it, or does not share.

Written here rather than taken from a library: the asyncio libraries that coalesce loads
(async-lru, aiocache) do it inside a cache of their own, and the two caches that use this (the
token memory, msgstack/tokens.py; the participant cache, msgstack/participants.py) keep rules
of their own (a revocation bound, invalidation generations, answers that depend on the viewer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from msgstack import metrics

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs at most one load per key at a time; `what` labels ``messaging_loads_shared_total``."""

    def __init__(self, what: str) -> None:
        self._flights: dict[Hashable, asyncio.Future[T]] = {}
        self._shared = metrics.LOADS_SHARED.labels(what)

    async def run(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(the result of the one load of `key` in flight, started by `load()` if none is;
        True when this caller joined a load another caller started)."""
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = asyncio.ensure_future(load())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        else:
            self._shared.inc()
        return await asyncio.shield(flight), joined

    def _landed(self, key: Hashable, flight: asyncio.Future[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved even if every caller went away meanwhile

"""Timeouts, bounded retries with jittered backoff and a circuit breaker around one adapter's work.

Libraries, not hand-written logic: retries are tenacity's ``AsyncRetrying`` with
``wait_random_exponential`` (full jitter: a random wait in ``[0, min(max, base * 2**n)]``), and the
breaker is purgatory's asyncio circuit breaker (closed -> open after N consecutive failures ->
half-open once the reset time has passed -> closed on the first success, open again on a
failure). This module only decides what counts as a failure, maps purgatory's states to the
metric labels ``closed`` / ``open`` / ``half_open`` and counts everything.

Order: the breaker wraps the retries, so one operation is one breaker sample however many tries
it took, and an open breaker refuses at once (`BreakerOpen`) without touching the dependency.
Only the dependency's own trouble (unreachable, timed out, overloaded) trips the breaker; an
application error (a constraint violation, a bad request) is passed through as a success of the
dependency. Purgatory moves an open breaker to half-open when the next call arrives after the
reset time, so `storage_circuit_breaker_state` shows ``open`` until traffic comes back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from msgstack import mutants
from msgstack.storage import metrics
from msgstack.storage.settings import StorageSettings

__all__ = ["STATES", "BreakerOpen", "Guard", "error_type"]

log = logging.getLogger("msgstack.storage")

T = TypeVar("T")

#: purgatory's state names -> our metric label and gauge value
STATES = {"closed": ("closed", 0), "opened": ("open", 1), "half-opened": ("half_open", 2)}


class BreakerOpen(ConnectionError):
    """The adapter's breaker is open: the call was refused without trying the dependency.

    A ConnectionError, so code that already treats "dependency unreachable" as transient (the
    API's 503, the dispatcher's outbox DLQ) handles it the same way.
    """

    def __init__(self, adapter: str, retry_after: float) -> None:
        super().__init__(
            f"{adapter} circuit breaker is open (too many consecutive failures); "
            f"retry in {retry_after:.1f}s"
        )
        self.adapter, self.retry_after = adapter, retry_after


def error_type(exc: BaseException) -> str:
    """The `type` label of storage_errors_total: every timeout is a ``TimeoutError``."""
    return "TimeoutError" if isinstance(exc, TimeoutError) else type(exc).__name__


class Guard:
    """Runs one adapter's operations under its breaker, retry policy and metrics."""

    def __init__(
        self,
        adapter: str,
        settings: StorageSettings,
        is_failure: Callable[[BaseException], bool],
        is_retryable: Callable[[BaseException], bool],
    ) -> None:
        self.adapter = adapter
        self.settings = settings
        self.is_failure = is_failure
        self.is_retryable = is_retryable
        self.state = "closed"
        self.opened_at = 0.0
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=settings.breaker_failures,
            # MUTANT: a reset time of an hour, so an opened breaker never half-opens again
            default_ttl=3600.0
            if mutants.on("storage_breaker_never_closes")
            else settings.breaker_reset_s,
            # purgatory: an excluded exception ends the call as a success of the dependency
            exclude=[(BaseException, lambda exc: not is_failure(exc))],
        )
        self._factory.add_listener(self._on_event)
        self._breaker = None  # purgatory's breaker, fetched once (its state lives in the factory)
        # the retry policy, built once; copied only when an operation actually failed
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(max(settings.attempts - 1, 1)),
            # its n-th wait follows the operation's (n+1)-th try: random(0, min(max, base * 2**n))
            wait=wait_random_exponential(
                multiplier=2 * settings.backoff_base_s, max=settings.backoff_max_s
            ),
            retry=retry_if_exception(is_retryable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        for label, _ in STATES.values():
            metrics.TRANSITIONS.labels(adapter, label)  # exported at 0 from the start
        metrics.BREAKER_STATE.labels(adapter).set(0)
        metrics.RETRIES.labels(adapter)
        # the labelled child looked up once (labels() takes a lock and a dict lookup per call)
        self._latency = metrics.LATENCY.labels(adapter)

    def _on_event(self, name: str, event_name: str, event: object) -> None:
        if event_name != "state_changed":
            return
        label, value = STATES.get(getattr(event, "state", ""), ("closed", 0))
        self.state = label
        if label == "open":
            self.opened_at = time.monotonic()
        metrics.TRANSITIONS.labels(self.adapter, label).inc()
        metrics.BREAKER_STATE.labels(self.adapter).set(value)
        (log.warning if label == "open" else log.info)(
            "%s circuit breaker %s", self.adapter, label.replace("_", "-")
        )

    async def call(self, operation: Callable[[], Awaitable[T]], retry: bool = True) -> T:
        """Run `operation` (a fresh awaitable per try); retry transient failures when `retry`.

        Raises BreakerOpen at once while the breaker is open, else the operation's last error.
        """
        started = time.perf_counter()
        try:
            breaker = self._breaker
            if breaker is None:
                breaker = self._breaker = await self._factory.get_breaker(self.adapter)
            try:
                async with breaker:
                    return await self._tries(operation, retry)
            except OpenedState:
                metrics.REJECTED.labels(self.adapter).inc()
                left = self.settings.breaker_reset_s - (time.monotonic() - self.opened_at)
                raise BreakerOpen(self.adapter, max(left, 0.0)) from None
        except BreakerOpen:
            raise
        except Exception as exc:
            metrics.ERRORS.labels(self.adapter, error_type(exc)).inc()
            raise
        finally:
            self._latency.observe(time.perf_counter() - started)

    async def _tries(self, operation: Callable[[], Awaitable[T]], retry: bool) -> T:
        """The first try straight away (no per-call objects on the path that succeeds); after a
        retryable failure, the remaining tries under the prebuilt policy, each after its
        jittered wait (the first wait is the policy's first: random(0, min(max, base)))."""
        try:
            return await operation()
        except Exception as exc:
            if not retry or self.settings.attempts < 2 or not self.is_retryable(exc):
                raise
            log.debug("%s retry 1 after %s", self.adapter, error_type(exc))
        metrics.RETRIES.labels(self.adapter).inc()
        await asyncio.sleep(
            random.uniform(0, min(self.settings.backoff_max_s, self.settings.backoff_base_s))
        )
        async for attempt in self._retrying.copy():
            with attempt:
                return await operation()
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _count_retry(self, state) -> None:
        metrics.RETRIES.labels(self.adapter).inc()
        log.debug("%s retry %d after %s", self.adapter, state.attempt_number, state.outcome)

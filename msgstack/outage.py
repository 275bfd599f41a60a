"""Back-off and one-line logging for a dependency that went away and came back.

Workers call `failed` on every error and `recovered` on every success; only the transitions are
logged, so an outage of minutes writes two lines, not thousands.
"""

from __future__ import annotations

import asyncio
import logging
import time

__all__ = ["Outage", "pause", "retry_after"]

BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0


class Outage:
    """The state of one dependency ("postgres", "redis") as seen by one worker."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name, self.log = name, log
        self.down_since: float | None = None
        self.delay = BACKOFF_MIN
        self.connected = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, why: str, due_in: float | None = None) -> float:
        """Record a failure; return how long to wait before the next attempt (also `delay`): the
        back-off, or less when an open breaker's trial is due sooner (`due_in`, see
        `retry_after`: refusals are cheap, a trial that comes late only delays the recovery)."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.delay = BACKOFF_MIN
            self.log.warning("%s unavailable (%s); reconnecting with back-off", self.name, why)
        else:
            self.delay = min(self.delay * 2, BACKOFF_MAX)
        if due_in is not None:
            self.delay = min(self.delay, due_in)
        return self.delay

    def recovered(self) -> None:
        if not self.connected:
            self.connected = True
            if self.down_since is None:
                self.log.info("%s connected", self.name)
        if self.down_since is not None:
            self.log.info(
                "%s reconnected after %.1fs", self.name, time.monotonic() - self.down_since
            )
            self.down_since = None
            self.delay = BACKOFF_MIN


def retry_after(exc: BaseException) -> float | None:
    """When a storage adapter's open breaker refused `exc`: seconds until its half-open trial
    (a hair more, so the next attempt is the trial), else None."""
    left = getattr(exc, "retry_after", None)  # msgstack.storage.BreakerOpen
    return None if left is None else left + 0.05


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if the service is asked to stop."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass

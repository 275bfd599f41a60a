"""The engine behind the kills timed by what a service is doing (random moments, catch-up).

A `Trigger` watches a condition (the consumer group's progress, its pending entries, a delay) and
kills the service through its target backend (`chaosmessaging.backends`) the moment the
condition holds: one watcher thread for a whole run of kills, armed once per kill, which signals
straight from its poll loop, because a round trip through another activity would give a consumer
the milliseconds it needs to finish a batch. Tests drive it without `chaos`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from chaosmessaging.backends import Backend, BackendError, Identity

__all__ = ["Arm", "Trigger", "behind_ms"]


def _id_ms(stream_id: str | None) -> int | None:
    return int(stream_id.split("-")[0]) if stream_id else None


def behind_ms(client: redis.Redis, stream: str, group: str) -> int | None:
    """Stream time (ms) between the newest entry and the group's last-delivered one; None when
    the stream or group is missing."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.xinfo_stream(stream)
        pipe.xinfo_groups(stream)
        info, groups = pipe.execute()
    except redis.ResponseError:
        return None
    newest = _id_ms(info.get("last-generated-id"))
    delivered = next((g["last-delivered-id"] for g in groups if g["name"] == group), None)
    if newest is None or delivered is None:
        return None
    return max(0, newest - (_id_ms(delivered) or 0))


@dataclass
class Arm:
    """One kill: fire when `condition()` (given whether the service runs) returns a truthy
    figure, or at `deadline` (monotonic) if the service runs then. `after_s` waits that long
    once the condition held (the catch-up jitter)."""

    condition: Callable[[bool], object]
    deadline: float | None = None
    after_s: float = 0.0
    #: set the moment the kill is sent (a start that sees its service die can tell it was us),
    #: `fired` once the kill is done (the service gone, `killed` filled in)
    pulled: threading.Event = field(default_factory=threading.Event)
    fired: threading.Event = field(default_factory=threading.Event)
    seen: dict = field(default_factory=dict)
    killed: list[Identity] = field(default_factory=list)


class Trigger:
    """Kills `service` through `backend` with `signal` when the armed condition holds."""

    #: how long a "the service runs" answer is reused: asking a container engine or an API
    #: server takes tens of milliseconds, far longer than the poll interval, and a consumer
    #: works off a batch in less (a stale "runs" only costs a kill that finds nothing to kill)
    ALIVE_TTL_S = 0.2

    def __init__(
        self, backend: Backend, service: str, signal: str, poll_interval: float = 0.003
    ) -> None:
        self.backend, self.service, self.signal = backend, service, signal
        self.poll_interval = float(poll_interval)
        self._alive: tuple[float, bool] = (0.0, False)
        self._armed: Arm | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="kill-trigger", daemon=True)
        self._thread.start()

    def __enter__(self) -> Trigger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._armed = None
            self._wake.notify_all()
        self._thread.join(10)

    def arm(self, arm: Arm) -> Arm:
        with self._wake:
            self._armed = arm
            self._wake.notify_all()
        return arm

    def disarm(self) -> None:
        with self._wake:
            self._armed = None

    def running(self, fresh: bool = True) -> bool:
        """Whether an instance of the service runs (`fresh=False`: an answer up to
        `ALIVE_TTL_S` old will do)."""
        at, alive = self._alive
        if not fresh and time.monotonic() - at < self.ALIVE_TTL_S:
            return alive
        try:
            alive = any(i.alive for i in self.backend.instances(self.service))
        except BackendError:
            alive = False
        self._alive = (time.monotonic(), alive)
        return alive

    def _fire(self, arm: Arm) -> bool:
        arm.pulled.set()
        try:
            arm.killed = self.backend.kill(self.service, self.signal)
        except BackendError as error:  # not running after all (exited on its own?)
            arm.pulled.clear()
            arm.seen["error"] = str(error)
            self._alive = (0.0, False)
            return False
        arm.seen["at"] = time.time()
        arm.fired.set()
        return True

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._armed is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                arm = self._armed
            if self._watch(arm):
                with self._wake:
                    if self._armed is arm:
                        self._armed = None

    def _watch(self, arm: Arm) -> bool:
        """Poll until `arm` fired (True) or was replaced or disarmed (False)."""
        while self._armed is arm and not self._closed:
            alive = self.running(fresh=False)
            try:
                figure = arm.condition(alive)
            except Exception as error:  # a Redis hiccup: keep watching until the deadline
                arm.seen["error"] = str(error)
                figure = None
            if alive and figure:
                if arm.after_s:
                    time.sleep(arm.after_s)
                if self._armed is arm and self._fire(arm):
                    arm.seen["figure"] = figure
                    return True
            if arm.deadline is not None and time.monotonic() >= arm.deadline and alive:
                if self._fire(arm):
                    arm.seen["deadline"] = True
                    return True
            time.sleep(self.poll_interval)
        return False

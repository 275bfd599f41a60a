"""Kill a service many times, at moments and for down-times drawn at random, replayably.

One well-chosen kill proves little: a bug that opens a loss window elsewhere in the consumer's
read -> record -> acknowledge cycle slips through it. `kill_at_random_moments` kills a service
`kills` times per run. Each kill's moment is drawn at random across the service's busy time:

- `busy="backlog"` (the consumer): the service is started again after its down-time, with a
  backlog waiting, and killed when it has worked off a random fraction (5-95 %) of it, i.e.
  somewhere inside its catch-up. Progress is read from Redis as stream time: how far (ms) the
  group's last-delivered id is behind the stream's newest id, polled every few milliseconds
  from a watcher thread that sends the signal itself (a round trip through another activity
  would give the consumer the milliseconds it needs to finish a batch), after a further random
  0-10 ms (`jitter_ms`, about the time one batch takes to record): a read moves that id in one
  jump, so without it every kill would land right after a read, and with much more it would land
  after the catch-up, on an idle consumer;
- `busy="time"` (any service, e.g. the dispatcher or the API under load): a moment drawn
  uniformly in `[0, window_s]` after it is running again.

Down-times are drawn uniformly too, half of them shorter and half longer than the consumer's
reclaim idle threshold (`reclaim_idle_ms`, MSGSTACK_RECLAIM_IDLE_MS), in a random order, so
both a quick restart (the new consumer must wait for the dead one's entries to go idle) and a
long one are exercised. Every draw comes from one `random.Random(seed)`; the seed is logged,
returned (journal) and recorded in the run's facts, so `seed=<it>` replays the same draws.

Each kill is recorded in the fault ledger and undone (the service started again) before the next
one; the safety net reverts a kill left behind by an interrupted run. Per kill the run's facts
hold (`kills:<label>`): when, the moment drawn, the pending entries at the kill (the snapshot
`pending:<label>#<n>`, all of them also under `pending:<label>`), the down-time; the verdict
`probes.recovery.kills_reclaimed` later says which of those entries were reclaimed and delivered.
"""

from __future__ import annotations

import random
import signal as signal_module
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import faults, runs
from chaosmessaging.actions._kill_engine import Arm, Trigger, behind_ms
from chaosmessaging.actions.process import record_service_fault
from chaosmessaging.backends import Backend, BackendError, backend_for
from chaosmessaging.clients.redis import pending_snapshot, redis_client, stream_names
from chaosmessaging.stack import control
from chaosmessaging.util import home_of

__all__ = ["kill_at_random_moments"]

_BUSY = ("backlog", "time")


def draws(
    seed: int,
    kills: int,
    down_min_s: float,
    down_max_s: float,
    reclaim_idle_ms: int,
    window_s: float,
    jitter_ms: int = 10,
) -> list[dict]:
    """Everything random about a run of kills, drawn up front from `random.Random(seed)`: per
    kill the catch-up `fraction` (5-95 %), the `jitter_s` after it in `[0, jitter_ms]` ms,
    the `delay_s` in `[0, window_s]` and the `down_s`
    (half shorter, half longer than the reclaim idle threshold, in a random order). The same
    arguments give the same draws: this is what replaying a seed means. Not an activity."""
    rng = random.Random(int(seed))
    idle_s = int(reclaim_idle_ms) / 1000.0
    low, high = float(down_min_s), float(down_max_s)
    short_hi, long_lo = min(high, idle_s * 0.9), max(low, idle_s * 1.1)
    downs = []
    for n in range(int(kills)):
        if n % 2 == 0 and short_hi > low:
            downs.append(rng.uniform(low, short_hi))
        elif long_lo < high:
            downs.append(rng.uniform(long_lo, high))
        else:
            downs.append(rng.uniform(low, high))
    rng.shuffle(downs)
    return [
        {
            "fraction": round(rng.uniform(0.05, 0.95), 3),
            "jitter_s": round(rng.uniform(0.0, int(jitter_ms) / 1000.0), 4),
            "delay_s": round(rng.uniform(0.0, float(window_s)), 3),
            "down_s": round(down, 3),
        }
        for down in downs
    ]


def _check(
    name: str, kills: int, down_min_s: float, down_max_s: float, busy: str, window_s: float
) -> None:
    problems = []
    if not name:
        problems.append("`name` must name an embedded-stack service, e.g. 'consumer'")
    if int(kills) < 1:
        problems.append(f"`kills` must be at least 1 (got {kills})")
    if not 0 <= float(down_min_s) <= float(down_max_s):
        problems.append(f"need 0 <= down_min_s <= down_max_s (got {down_min_s}, {down_max_s})")
    if busy not in _BUSY:
        problems.append(f"`busy` must be one of {', '.join(_BUSY)} (got {busy!r})")
    if float(window_s) <= 0:
        problems.append(f"`window_s` must be positive (got {window_s})")
    if problems:
        raise ActivityFailed("kill_at_random_moments: " + "; ".join(problems))


class RandomKills:
    """The engine of `kill_at_random_moments`: one `Trigger` (one watcher thread) for the whole
    run, armed per kill with a catch-up fraction or a delay, the service started again between
    kills through its backend (ready included). Tests drive it without `chaos`."""

    def __init__(
        self,
        backend: Backend,
        name: str,
        signal_name: str,
        drawn: list[dict],
        busy: str,
        reclaim_idle_ms: int,
        min_backlog_ms: int,
        restart_timeout: float,
        poll_interval: float,
        label: str,
        configuration: Configuration = None,
        secrets: Secrets = None,
    ) -> None:
        self.backend, self.name, self.signal_name = backend, name, signal_name
        self.drawn, self.busy, self.label = drawn, busy, label
        self.idle_s = int(reclaim_idle_ms) / 1000.0
        self.min_backlog_ms, self.restart_timeout = int(min_backlog_ms), float(restart_timeout)
        self.poll_interval = float(poll_interval)
        self.configuration, self.secrets = configuration, secrets
        self.home = home_of(configuration)
        self.stream, self.group = stream_names(None, None, configuration, secrets)
        self.client, _ = redis_client(None, configuration, secrets)
        self.done: list[dict] = []
        self.pending: dict[str, dict] = {}

    def _arm(self, n: int, moment: str) -> Arm:
        draw = self.drawn[n]
        if moment != "catch-up":
            at = time.monotonic() + draw["delay_s"]
            return Arm(condition=lambda alive: alive and time.monotonic() >= at)
        arm = Arm(
            condition=lambda alive: None,
            deadline=time.monotonic() + self.restart_timeout,
            after_s=draw["jitter_s"],
        )
        start: dict = {}

        def caught_up(alive: bool) -> int | None:
            behind = behind_ms(self.client, self.stream, self.group)
            if not alive or behind is None:
                return None
            if "ms" not in start:
                start["ms"] = behind
                arm.seen["backlog_ms"] = behind
            arm.seen["behind_ms"] = behind
            return behind <= (1.0 - draw["fraction"]) * start["ms"] or None

        arm.condition = caught_up
        return arm

    def _moment(self, restarting: bool) -> str:
        if not (restarting and self.busy == "backlog"):
            return "time"
        behind = behind_ms(self.client, self.stream, self.group)
        # nothing to catch up (the load ended?): a moment in time
        return "catch-up" if behind is not None and behind >= self.min_backlog_ms else "time"

    def _one(self, trigger: Trigger, n: int, began: float) -> None:
        restarting = not trigger.running()
        moment = self._moment(restarting)
        armed = trigger.arm(self._arm(n, moment)) if moment == "catch-up" else None
        if restarting:
            if self.done:
                self.done[-1]["restarted_after_s"] = round(time.time() - self.done[-1]["at"], 3)
            try:
                self._start()
            except BackendError:
                if armed is None or not armed.pulled.is_set():  # failed on its own, not our kill
                    raise
        if armed is None:
            armed = trigger.arm(self._arm(n, moment))
        armed.fired.wait(self.restart_timeout + self.drawn[n]["delay_s"])
        trigger.disarm()
        if not armed.fired.is_set():
            raise ActivityFailed(
                f"kill {n + 1} of {self.name} never fired (service not running?"
                f"{' ' + armed.seen['error'] if 'error' in armed.seen else ''}); "
                "see its log (<home>/logs or the container's)"
            )
        self._record(n, moment, armed, began)

    def _record(self, n: int, moment: str, armed: Arm, began: float) -> None:
        record_service_fault(
            self.name, armed.killed, self.signal_name, self.home, backend=self.backend
        )
        snapshot = pending_snapshot(
            label=f"{self.label}#{n + 1}", configuration=self.configuration, secrets=self.secrets
        )
        for entry in runs.fact(f"pending:{self.label}#{n + 1}", [], home=self.home):
            self.pending.setdefault(entry["id"], entry)
        draw, catch_up = self.drawn[n], moment == "catch-up"
        kill = {
            "n": n + 1,
            "at": round(armed.seen["at"], 3),
            "t_s": round(armed.seen["at"] - began, 3),
            "moment": moment,
            "fraction": draw["fraction"] if catch_up else None,
            "jitter_s": draw["jitter_s"] if catch_up else None,
            "delay_s": draw["delay_s"] if not catch_up else None,
            "backlog_ms": armed.seen.get("backlog_ms"),
            "behind_ms": armed.seen.get("behind_ms") if catch_up else None,
            "pending_at_kill": snapshot["count"],
            "pending_consumers": snapshot["consumers"],
            "down_s": draw["down_s"],
            "down_vs_reclaim": "shorter" if draw["down_s"] < self.idle_s else "longer",
            "killed": [i.to_json() for i in armed.killed],
        }
        logger.info(
            f"kill {n + 1}/{len(self.drawn)} of {self.name} ({moment}): {snapshot['count']} "
            f"entries pending; down for {draw['down_s']} s ({kill['down_vs_reclaim']} than the "
            "reclaim threshold)"
        )
        self.done.append(kill)
        runs.record(f"kills:{self.label}", self.done, home=self.home)
        runs.record(f"pending:{self.label}", list(self.pending.values()), home=self.home)

    def _start(self) -> list:
        """Start the service again (ready included) and clear its kill from the fault ledger."""
        started = self.backend.start(self.name, self.restart_timeout)
        faults.clear(f"service:{self.name}", self.home)
        return started

    def run(self) -> list[dict]:
        began = time.time()
        with Trigger(self.backend, self.name, self.signal_name, self.poll_interval) as trigger:
            for n in range(len(self.drawn)):
                self._one(trigger, n, began)
                time.sleep(self.drawn[n]["down_s"])
        # the last kill's rollback: the service runs again when the action returns
        self.done[-1]["restarted_after_s"] = round(time.time() - self.done[-1]["at"], 3)
        started = self._start()
        self.done[-1]["identities_after"] = [i.to_json() for i in started]
        runs.record(f"kills:{self.label}", self.done, home=self.home)
        return self.done


def kill_at_random_moments(
    name: str = "consumer",
    kills: int = 3,
    seed: int = 0,
    down_min_s: float = 1.0,
    down_max_s: float = 9.0,
    reclaim_idle_ms: int = 5000,
    busy: str = "backlog",
    window_s: float = 3.0,
    jitter_ms: int = 10,
    min_backlog_ms: int = 200,
    signal: str = "SIGKILL",
    label: str = "random_kills",
    restart_timeout: float = 60.0,
    poll_interval: float = 0.003,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Kill service `name` (default the consumer; through its target backend: process, Docker
    container or Kubernetes pod) `kills` times with `signal`,
    each time at a moment drawn at random across its busy time, keep it down for a drawn
    down-time, and start it again (each kill's own rollback).

    The first kill strikes the running service within `window_s` s. Later ones, with
    `busy="backlog"` (the consumer), strike while it catches up the backlog its down-time left:
    after it has worked off a random 5-95 % of it, plus a random 0-`jitter_ms` ms so the
    kill lands anywhere in the read -> record -> acknowledge cycle (a backlog under
    `min_backlog_ms` of stream time is no catch-up: the moment is then drawn in time, as with
    `busy="time"`, which draws it uniformly in `[0, window_s]` s after the restart, for any
    service). Down-times are drawn
    in `[down_min_s, down_max_s]`, half shorter and half longer than `reclaim_idle_ms`.
    `seed` 0 draws a fresh seed; any other value replays a run's draws.

    Records per kill (fact `kills:<label>`) and returns
    `{"seed", "kills": [{"n", "at", "t_s", "moment", "fraction", "backlog_ms", "behind_ms",
    "pending_at_kill", "pending_consumers", "down_s", "down_vs_reclaim", "restarted_after_s",
    "killed": [identities]}], "reclaim_idle_ms"}`; the entries pending at each kill go to the
    facts `pending:<label>#<n>` and (all kills) `pending:<label>` for
    `probes.recovery.kills_reclaimed`."""
    _check(name, kills, down_min_s, down_max_s, busy, window_s)
    try:
        signal_name = signal_module.Signals(control.signal_number(signal)).name
    except ValueError as exc:
        raise ActivityFailed(f"{exc}; or give a number") from None
    backend = backend_for(name, configuration, secrets)
    if not backend.instances(name):
        raise ActivityFailed(f"no service {name!r} through the {backend.name} target backend")
    seed = int(seed) or random.SystemRandom().randrange(1, 2**31)
    drawn = draws(seed, kills, down_min_s, down_max_s, reclaim_idle_ms, window_s, jitter_ms)
    logger.info(
        f"killing {name} ({backend.name}) {kills} times at random moments, seed {seed} (replay "
        f"with seed={seed}); down-times {[d['down_s'] for d in drawn]} s around the reclaim "
        f"threshold {int(reclaim_idle_ms) / 1000:g} s"
    )
    runs.record(f"seed:{label}", seed, home=home_of(configuration))
    engine = RandomKills(
        backend, name, signal_name, drawn, busy, reclaim_idle_ms, min_backlog_ms,
        restart_timeout, poll_interval, label, configuration, secrets,
    )  # fmt: skip
    done = engine.run()
    return {
        "seed": seed,
        "service": name,
        "signal": signal_name,
        "label": label,
        "backend": backend.name,
        "reclaim_idle_ms": int(reclaim_idle_ms),
        "kills": done,
    }

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
  0-30 ms (`jitter_ms`, about one batch): a read moves that id in one jump, so without it
  every kill would land right after a read;
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

import os
import random
import signal as signal_module
import threading
import time

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.actions.process import record_service_fault, start_service
from chaosmessaging.clients.redis import pending_snapshot, redis_client, stream_names
from chaosmessaging.stack import control
from chaosmessaging.stack.state import StackNotRunning, load_state
from chaosmessaging.util import home_of

__all__ = ["kill_at_random_moments"]

_BUSY = ("backlog", "time")


def _id_ms(stream_id: str | None) -> int | None:
    return int(stream_id.split("-")[0]) if stream_id else None


def _behind_ms(client: redis.Redis, stream: str, group: str) -> int | None:
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


def draws(
    seed: int,
    kills: int,
    down_min_s: float,
    down_max_s: float,
    reclaim_idle_ms: int,
    window_s: float,
    jitter_ms: int = 30,
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


class _Killer:
    """Watches the consumer group from a thread and signals the service at the drawn moment."""

    def __init__(
        self,
        home: str | None,
        name: str,
        signum: int,
        client: redis.Redis,
        stream: str,
        group: str,
        poll_interval: float,
    ) -> None:
        self.home, self.name, self.signum = home, name, signum
        self.client, self.stream, self.group = client, stream, group
        self.poll_interval = poll_interval
        self.fired = threading.Event()
        self.stop = threading.Event()
        self.seen: dict = {}

    def _fire(self) -> bool:
        record = load_state(self.home).service(self.name)
        if not record.alive():
            return False
        os.killpg(record.pid, self.signum)
        self.seen.update(pid=record.pid, at=time.time())
        self.fired.set()
        return True

    def at_progress(self, fraction: float, jitter: float, deadline: float) -> None:
        """Fire once the backlog (stream time behind) has shrunk by `fraction` of its size at the
        first poll that finds the service running; at `deadline` fire anyway."""
        start_ms = None
        while not self.stop.is_set():
            try:
                behind = _behind_ms(self.client, self.stream, self.group)
            except redis.RedisError as error:
                self.seen["error"] = str(error)
                behind = None
            alive = load_state(self.home).service(self.name).alive()
            if alive and behind is not None:
                if start_ms is None:
                    start_ms = behind
                    self.seen["backlog_ms"] = behind
                if behind <= (1.0 - fraction) * start_ms:
                    # progress is only visible when a read moves the group's last-delivered
                    # id: without the jitter every kill would land right after a read
                    if self.stop.wait(jitter):
                        return
                    if self._fire():
                        self.seen["behind_ms"] = behind
                        return
            if time.monotonic() >= deadline and alive and self._fire():
                self.seen.update(behind_ms=behind, deadline=True)
                return
            time.sleep(self.poll_interval)

    def after_delay(self, delay: float) -> None:
        if not self.stop.wait(delay):
            self._fire()


def kill_at_random_moments(
    name: str = "consumer",
    kills: int = 3,
    seed: int = 0,
    down_min_s: float = 1.0,
    down_max_s: float = 9.0,
    reclaim_idle_ms: int = 5000,
    busy: str = "backlog",
    window_s: float = 3.0,
    jitter_ms: int = 30,
    min_backlog_ms: int = 200,
    signal: str = "SIGKILL",
    label: str = "random_kills",
    restart_timeout: float = 60.0,
    poll_interval: float = 0.003,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Kill embedded-stack service `name` (default the consumer) `kills` times with `signal`,
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
    "pending_at_kill", "pending_consumers", "down_s", "down_vs_reclaim", "restarted_after_s"}],
    "reclaim_idle_ms"}`; the entries pending at each kill go to the facts `pending:<label>#<n>`
    and (all kills) `pending:<label>` for `probes.recovery.kills_reclaimed`."""
    _check(name, kills, down_min_s, down_max_s, busy, window_s)
    home = home_of(configuration)
    try:
        signum = control.signal_number(signal)
    except ValueError as exc:
        raise ActivityFailed(f"{exc}; or give a number") from None
    signal_name = signal_module.Signals(signum).name
    try:
        load_state(home).service(name)
    except (StackNotRunning, KeyError) as exc:
        raise ActivityFailed(str(exc).strip("'\"")) from None
    seed = int(seed) or random.SystemRandom().randrange(1, 2**31)
    idle_s = int(reclaim_idle_ms) / 1000.0
    drawn = draws(seed, kills, down_min_s, down_max_s, reclaim_idle_ms, window_s, jitter_ms)
    downs = [d["down_s"] for d in drawn]
    logger.info(
        f"killing {name} {kills} times at random moments, seed {seed} (replay with "
        f"seed={seed}); down-times {downs} s around the reclaim threshold {idle_s:g} s"
    )
    runs.record(f"seed:{label}", seed, home=home)
    stream, group = stream_names(None, None, configuration, secrets)
    client, _ = redis_client(None, configuration, secrets)
    began = time.time()
    done: list[dict] = []
    all_pending: dict[str, dict] = {}
    for n in range(int(kills)):
        fraction, delay, jitter = drawn[n]["fraction"], drawn[n]["delay_s"], drawn[n]["jitter_s"]
        killer = _Killer(home, name, signum, client, stream, group, float(poll_interval))
        restarting = not load_state(home).service(name).alive()
        moment = "catch-up" if restarting and busy == "backlog" else "time"
        if restarting and moment == "catch-up":
            behind = _behind_ms(client, stream, group)
            if behind is None or behind < int(min_backlog_ms):
                moment = "time"  # nothing to catch up (the load ended?): a moment in time
        if moment == "catch-up":
            deadline = time.monotonic() + float(restart_timeout)
            watcher = threading.Thread(
                target=killer.at_progress,
                args=(fraction, jitter, deadline),
                name="random-kill",
                daemon=True,
            )
        else:
            watcher = threading.Thread(
                target=killer.after_delay, args=(delay,), name="random-kill", daemon=True
            )
        if moment == "catch-up":
            watcher.start()
        try:
            if restarting:
                if done:
                    done[-1]["restarted_after_s"] = round(time.time() - done[-1]["at"], 3)
                try:
                    start_service(
                        name=name,
                        timeout=restart_timeout,
                        configuration=configuration,
                        secrets=secrets,
                    )
                except ActivityFailed:
                    if not killer.fired.is_set():  # it failed on its own, not by our kill
                        raise
            if moment != "catch-up":
                watcher.start()
            watcher.join(float(restart_timeout) + float(window_s))
        finally:
            killer.stop.set()
            watcher.join(5)
        if not killer.fired.is_set():
            raise ActivityFailed(
                f"kill {n + 1} of {name} never fired (service not running?); "
                f"seed {seed}; see its log under <home>/logs"
            )
        control.stop_service(name, signum, home=home)  # waits until gone, updates the state
        record_service_fault(name, killer.seen.get("pid"), signal_name, home)
        snapshot = pending_snapshot(
            label=f"{label}#{n + 1}", configuration=configuration, secrets=secrets
        )
        for entry in runs.fact(f"pending:{label}#{n + 1}", [], home=home):
            all_pending.setdefault(entry["id"], entry)
        down = downs[n]
        kill = {
            "n": n + 1,
            "at": round(killer.seen["at"], 3),
            "t_s": round(killer.seen["at"] - began, 3),
            "moment": moment,
            "fraction": fraction if moment == "catch-up" else None,
            "jitter_s": jitter if moment == "catch-up" else None,
            "delay_s": delay if moment != "catch-up" else None,
            "backlog_ms": killer.seen.get("backlog_ms"),
            "behind_ms": killer.seen.get("behind_ms"),
            "pending_at_kill": snapshot["count"],
            "pending_consumers": snapshot["consumers"],
            "down_s": down,
            "down_vs_reclaim": "shorter" if down < idle_s else "longer",
        }
        logger.info(
            f"kill {n + 1}/{kills} of {name} ({moment}): {snapshot['count']} entries "
            f"pending; down for {down} s ({kill['down_vs_reclaim']} than the reclaim "
            f"threshold)"
        )
        done.append(kill)
        runs.record(f"kills:{label}", done, home=home)
        runs.record(f"pending:{label}", list(all_pending.values()), home=home)
        time.sleep(down)
    # the last kill's rollback: the service runs again when the action returns
    done[-1]["restarted_after_s"] = round(time.time() - done[-1]["at"], 3)
    start_service(name=name, timeout=restart_timeout, configuration=configuration, secrets=secrets)
    runs.record(f"kills:{label}", done, home=home)
    return {
        "seed": seed,
        "service": name,
        "signal": signal_name,
        "label": label,
        "reclaim_idle_ms": int(reclaim_idle_ms),
        "kills": done,
    }

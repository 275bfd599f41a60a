"""kill_at_random_moments: replayable draws, and real kills of a real embedded-stack consumer,
each one undone before the next; crash_during_catch_up repeats a kill that held nothing and
waits for entries the restarted consumer read itself."""

from __future__ import annotations

import os
import time
from signal import SIGCONT, SIGSTOP

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import faults, runs
from chaosmessaging.actions import consumer, load, process, random_faults
from chaosmessaging.backends import backend_for
from chaosmessaging.clients.redis import PENDING, pel_count, redis_client, stream_names
from chaosmessaging.stack.state import load_state


def test_a_seed_replays_the_same_moments_and_down_times():
    first = random_faults.draws(1234, 6, 1.0, 9.0, 5000, 3.0)
    assert first == random_faults.draws(1234, 6, 1.0, 9.0, 5000, 3.0)
    assert first != random_faults.draws(1235, 6, 1.0, 9.0, 5000, 3.0)
    downs = [d["down_s"] for d in first]
    # half shorter, half longer than the reclaim idle threshold (5 s), all within the bounds
    assert sum(d < 5.0 for d in downs) == 3 and sum(d > 5.0 for d in downs) == 3
    assert all(1.0 <= d <= 9.0 for d in downs)
    assert all(0.05 <= d["fraction"] <= 0.95 and 0 <= d["delay_s"] <= 3.0 for d in first)


@pytest.mark.parametrize(
    "arguments,words",
    [
        ({"kills": 0}, "`kills` must be at least 1"),
        ({"down_min_s": 5, "down_max_s": 1}, "down_min_s <= down_max_s"),
        ({"busy": "sometimes"}, "`busy` must be one of backlog, time"),
    ],
)
def test_bad_arguments_are_refused_before_any_kill(arguments, words):
    with pytest.raises(ActivityFailed, match=words):
        random_faults.kill_at_random_moments(**arguments)


def test_kills_the_consumer_repeatedly_and_starts_it_again_each_time(embedded_stack, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", embedded_stack.home)
    monkeypatch.delenv(runs.ENV, raising=False)
    before = load_state(embedded_stack.home).service("consumer").pid
    result = random_faults.kill_at_random_moments(
        name="consumer",
        kills=2,
        seed=42,
        down_min_s=0.2,
        down_max_s=1.0,
        reclaim_idle_ms=500,
        busy="backlog",
        window_s=0.5,
        label="test_kills",
    )
    assert result["seed"] == 42 and len(result["kills"]) == 2
    planned = random_faults.draws(42, 2, 0.2, 1.0, 500, 0.5)
    assert [k["down_s"] for k in result["kills"]] == [d["down_s"] for d in planned]
    # no load, so no backlog: the second moment is drawn in time, not in a catch-up
    assert [k["moment"] for k in result["kills"]] == ["time", "time"]
    assert {k["down_vs_reclaim"] for k in result["kills"]} == {"shorter", "longer"}
    assert runs.fact("seed:test_kills") == 42
    assert runs.fact("kills:test_kills") == result["kills"]
    record = load_state(embedded_stack.home).service("consumer")
    assert record.alive() and record.pid != before  # every kill undone, the last one too
    assert faults.active(embedded_stack.home) == []


def test_other_services_are_killed_at_moments_drawn_in_time(embedded_stack, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", embedded_stack.home)
    monkeypatch.delenv(runs.ENV, raising=False)
    result = random_faults.kill_at_random_moments(
        name="dispatcher",
        kills=2,
        seed=7,
        down_min_s=0.1,
        down_max_s=0.6,
        reclaim_idle_ms=300,
        busy="time",
        window_s=0.3,
        label="dispatcher_kills",
    )
    planned = random_faults.draws(7, 2, 0.1, 0.6, 300, 0.3)
    assert [k["delay_s"] for k in result["kills"]] == [d["delay_s"] for d in planned]
    assert all(k["moment"] == "time" for k in result["kills"])
    assert load_state(embedded_stack.home).service("dispatcher").alive()
    assert faults.active(embedded_stack.home) == []


class _SignalLandsAfterTheAck:
    """Delayed-signal wrapper over the real process backend: its first kill lands when the
    consumer has acknowledged everything it held, as a signal that lands a few milliseconds late
    would (the consumer is stopped at a moment it holds nothing, so it cannot read its next batch
    before the kill; fewer than `below` pending). Every other call goes to the real backend."""

    def __init__(self, real, configuration, below):
        self.real, self.configuration, self.below, self.kills = real, configuration, below, 0

    def __getattr__(self, attribute):
        return getattr(self.real, attribute)

    def kill(self, service, signal="SIGKILL", instance=None, grace=10.0):
        self.kills += 1
        if self.kills == 1:
            pids = [int(i.instance) for i in self.real.instances(service) if i.alive]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if pel_count(configuration=self.configuration):
                    time.sleep(0.001)
                    continue
                for pid in pids:
                    os.kill(pid, SIGSTOP)
                # a blocking read it sent before the stop is still served (Redis adds what it
                # returns to the pending list): let it land, longer than a dispatch period
                time.sleep(0.3)
                if pel_count(configuration=self.configuration) < self.below:
                    break  # stopped holding (next to) nothing: the kill below proves nothing
                for pid in pids:
                    os.kill(pid, SIGCONT)
        return self.real.kill(service, signal, instance, grace)


def test_a_catch_up_kill_that_lands_after_the_ack_is_repeated_until_it_holds_entries(
    embedded_stack, monkeypatch
):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", embedded_stack.home)
    monkeypatch.delenv(runs.ENV, raising=False)
    runs.new_run()
    wrappers = []

    def wrapped(name, configuration=None, secrets=None):
        real = backend_for(name, configuration)
        wrappers.append(_SignalLandsAfterTheAck(real, configuration, below=20))
        return wrappers[-1]

    monkeypatch.setattr(consumer, "backend_for", wrapped)
    process.kill_service("consumer", "SIGKILL")
    load.start_load(rate=200, total_messages=4000, label="late-signal")
    try:
        time.sleep(2)  # a backlog for the restart to catch up on
        result = consumer.crash_during_catch_up("consumer", min_pending=20, timeout=60)
    finally:
        load.wait_for_load(label="late-signal", timeout=60)
        process.start_service("consumer")
    assert result["killed"] and result["pending_at_kill"]["count"] >= 20, result
    assert wrappers[0].kills == result["attempts"] >= 2, result
    assert len(PENDING.get("at_kill", None)) == result["pending_at_kill"]["count"]
    assert faults.active(embedded_stack.home) == []


def _held_by(client, stream: str, group: str, name: str) -> int:
    found = [c for c in client.xinfo_consumers(stream, group) if c["name"] == name]
    return found[0]["pending"] if found else 0


def _id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def test_the_catch_up_kill_waits_for_a_batch_the_new_consumer_read_not_its_predecessors(
    embedded_stack, monkeypatch
):
    # a consumer killed mid-batch leaves its entries pending; its successor must be killed
    # holding entries it read itself, not at once for its predecessor's (it would die booting,
    # before reading anything: a consumer that acknowledges before it records would pass)
    monkeypatch.setenv("CHAOSMESSAGING_HOME", embedded_stack.home)
    monkeypatch.delenv(runs.ENV, raising=False)
    runs.new_run()
    client, _ = redis_client()
    stream, group = stream_names(None, None, None, None)
    process.kill_service("consumer", "SIGKILL")
    load.start_load(rate=200, total_messages=3000, label="predecessor")
    try:
        time.sleep(2)  # the consumer is down: the load's entries wait in the stream
        # the dead predecessor's batch: 30 entries read under its name, never acknowledged
        [(_, left)] = client.xreadgroup(group, "consumer-gone-1", {stream: ">"}, count=30)
        assert len(left) == 30
        result = consumer.crash_during_catch_up("consumer", min_pending=20, timeout=60)
    finally:
        load.wait_for_load(label="predecessor", timeout=60)
        process.start_service("consumer")
        # the consumer reclaims the predecessor's entries once idle; then the name can go
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _held_by(client, stream, group, "consumer-gone-1"):
            time.sleep(0.5)
        client.xgroup_delconsumer(stream, group, "consumer-gone-1")
    newest_left = max(_id(entry_id) for entry_id, _ in left)
    at_kill = [entry["id"] for entry in PENDING.get("at_kill", None)]
    read = [entry_id for entry_id in at_kill if _id(entry_id) > newest_left]
    assert result["killed"] and len(read) >= 20, (len(read), result)
    assert result["read_at_kill"] == len(read)
    assert faults.active(embedded_stack.home) == []

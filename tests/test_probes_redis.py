"""Redis Streams probes against a real private Redis 6.2 (no `lag` in XINFO GROUPS there)."""

import time
import uuid

import pytest
import redis
from chaoslib.exceptions import ActivityFailed

from chaosmessaging.probes import redis as probes
from chaosmessaging.stack import servers


@pytest.fixture
def client(redis_server):
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture
def names(redis_server):
    """Unique stream/group names per test, given to the probes through configuration."""
    tag = uuid.uuid4().hex[:8]
    return {
        "messaging_redis_url": redis_server.url,
        "messaging_stream": f"s-{tag}",
        "messaging_group": f"g-{tag}",
        "messaging_dead_stream": f"s-{tag}:dead",
    }


def _add(client, stream, count, first_ms=None, step_ms=1):
    ids = []
    for i in range(count):
        entry_id = "*" if first_ms is None else f"{first_ms + i * step_ms}-0"
        ids.append(client.xadd(stream, {"message_id": str(uuid.uuid4())}, id=entry_id))
    return ids


def test_missing_stream_and_group_read_as_zero_not_a_crash(names):
    assert probes.stream_length(configuration=names) == 0
    assert probes.pel_count(configuration=names) == 0
    assert probes.oldest_pending_idle_ms(configuration=names) == 0
    assert probes.pending_entries(configuration=names) == []
    assert probes.consumer_lag(configuration=names) == {
        "entries": 0,
        "seconds": 0.0,
        "pending": 0,
        "truncated": False,
        "missing": f"stream '{names['messaging_stream']}'",
    }
    assert probes.dead_letter_count(configuration=names) == 0


def test_existing_stream_without_group_reads_as_zero(client, names):
    _add(client, names["messaging_stream"], 3)
    assert probes.stream_length(configuration=names) == 3
    assert probes.pel_count(configuration=names) == 0
    lag = probes.consumer_lag(configuration=names)
    assert lag["entries"] == 0 and lag["missing"] == f"group '{names['messaging_group']}'"


def test_pel_and_pending_entries_follow_reads_and_acks(client, names):
    stream, group = names["messaging_stream"], names["messaging_group"]
    ids = _add(client, stream, 5)
    client.xgroup_create(stream, group, id="0")
    client.xreadgroup(group, "c1", {stream: ">"}, count=2)
    client.xreadgroup(group, "c2", {stream: ">"}, count=1)
    assert probes.pel_count(configuration=names) == 3
    client.xack(stream, group, ids[0])
    assert probes.pel_count(configuration=names) == 2

    entries = probes.pending_entries(configuration=names)
    assert [e["id"] for e in entries] == ids[1:3]
    assert [e["consumer"] for e in entries] == ["c1", "c2"]
    assert all(e["deliveries"] == 1 and e["idle_ms"] >= 0 for e in entries)
    assert [e["id"] for e in probes.pending_entries(consumer="c2", configuration=names)] == [ids[2]]
    assert probes.pending_entries(count=1, configuration=names)[0]["id"] == ids[1]


def test_oldest_pending_idle_grows_while_unacknowledged(client, names):
    stream, group = names["messaging_stream"], names["messaging_group"]
    _add(client, stream, 3)
    client.xgroup_create(stream, group, id="0")
    client.xreadgroup(group, "c1", {stream: ">"}, count=3)
    time.sleep(0.3)
    assert probes.oldest_pending_idle_ms(configuration=names) >= 300
    assert probes.pending_entries(min_idle_ms=10_000, configuration=names) == []


def test_consumer_lag_counts_undelivered_entries_and_their_age(client, names):
    stream, group = names["messaging_stream"], names["messaging_group"]
    now_ms = int(client.time()[0]) * 1000
    # first entry 10 s old, the next ones 5 s old and younger: delivering one leaves a 5 s lag
    _add(client, stream, 1, first_ms=now_ms - 10_000)
    _add(client, stream, 4, first_ms=now_ms - 5_000)
    client.xgroup_create(stream, group, id="0")
    client.xreadgroup(group, "c1", {stream: ">"}, count=1)

    lag = probes.consumer_lag(configuration=names)
    assert lag["entries"] == 4 and lag["pending"] == 1 and lag["truncated"] is False
    assert 5.0 <= lag["seconds"] < 8.0
    assert probes.consumer_lag_entries(configuration=names) == 4
    assert 5.0 <= probes.consumer_lag_seconds(configuration=names) < 8.0

    client.xreadgroup(group, "c1", {stream: ">"}, count=10)
    assert probes.consumer_lag(configuration=names) == {
        "entries": 0,
        "seconds": 0.0,
        "pending": 5,
        "truncated": False,
    }


def test_consumer_lag_pages_through_long_backlogs_and_stops_at_max_count(client, names):
    stream, group = names["messaging_stream"], names["messaging_group"]
    client.xgroup_create(stream, group, id="$", mkstream=True)
    pipe = client.pipeline()
    for _ in range(2500):
        pipe.xadd(stream, {"message_id": "x"})
    pipe.execute()
    assert probes.consumer_lag(configuration=names)["entries"] == 2500
    capped = probes.consumer_lag(max_count=2000, configuration=names)
    assert capped["entries"] == 2000 and capped["truncated"] is True
    assert probes.consumer_lag(max_count=2500, configuration=names)["truncated"] is False


def test_dead_letter_count_reads_the_dead_stream(client, names):
    for _ in range(2):
        client.xadd(names["messaging_dead_stream"], {"message_id": "m", "reason": "poison"})
    assert probes.dead_letter_count(configuration=names) == 2
    assert (
        probes.dead_letter_count(dead_stream="nope-" + uuid.uuid4().hex, configuration=names) == 0
    )


def test_unreachable_redis_raises_an_actionable_error_without_the_password():
    url = f"redis://:hunter2@127.0.0.1:{servers.free_port()}/0"
    for probe in (
        probes.stream_length,
        probes.pel_count,
        probes.consumer_lag,
        probes.dead_letter_count,
    ):
        with pytest.raises(ActivityFailed) as failure:
            probe(configuration={"messaging_redis_url": url})
        message = str(failure.value)
        assert "cannot reach Redis at redis://:***@127.0.0.1" in message
        assert "chaosmessaging stack status" in message
        assert "hunter2" not in message

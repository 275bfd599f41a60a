"""Toxiproxy actions and probes through toxiproxy-python, against the fault proxy with real Redis
traffic: partition cuts Redis off, heal restores it, toxics are recorded and reverted."""

import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import faults
from chaosmessaging.actions import toxiproxy as tp
from chaosmessaging.probes.toxiproxy import active_toxics, proxy_enabled
from chaosmessaging.proxy import BackgroundProxyServer
from chaosmessaging.stack.servers import free_port


@pytest.fixture()
def setup(redis_server, tmp_path):
    listen = free_port()
    config = [
        {
            "name": "redis",
            "listen": f"127.0.0.1:{listen}",
            "upstream": f"{redis_server.host}:{redis_server.port}",
            "enabled": True,
        }
    ]
    with BackgroundProxyServer(config=config) as proxy:
        configuration = {"toxiproxy_url": proxy.url, "chaosmessaging_home": str(tmp_path)}
        # no client-side retries: each failure should surface at once
        client = redis.Redis(
            host="127.0.0.1",
            port=listen,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        yield configuration, client, tmp_path


def test_partition_disable_cuts_redis_off_and_heal_restores_it(setup):
    configuration, client, home = setup
    assert client.ping()
    out = tp.partition(proxy="redis", mode="disable", configuration=configuration)
    assert out["partitioned"] and not proxy_enabled("redis", configuration=configuration)
    assert [f.kind for f in faults.active(home)] == ["proxy_disabled"]
    with pytest.raises(redis.ConnectionError):
        client.ping()
    tp.heal(proxy="redis", configuration=configuration)
    assert proxy_enabled("redis", configuration=configuration)
    assert faults.active(home) == []
    client.connection_pool.disconnect()
    assert client.ping()


def test_partition_timeout_holds_traffic_until_healed(setup):
    configuration, client, home = setup
    client.ping()
    tp.partition(proxy="redis", mode="timeout", configuration=configuration)
    names = {t["name"] for t in active_toxics("redis", configuration=configuration)["redis"]}
    assert names == {"chaosmessaging_partition_upstream", "chaosmessaging_partition_downstream"}
    with pytest.raises(redis.TimeoutError):
        client.ping()
    healed = tp.heal(proxy="redis", configuration=configuration)
    assert set(healed["removed_toxics"]) == names
    assert active_toxics("redis", configuration=configuration) == {"redis": []}
    client.connection_pool.disconnect()
    assert client.ping()


def test_latency_toxic_slows_redis_and_revert_all_removes_it(setup):
    configuration, client, home = setup
    client.ping()
    tp.add_latency("redis", latency_ms=150, configuration=configuration)
    started = time.perf_counter()
    client.ping()
    assert time.perf_counter() - started >= 0.14
    results = faults.revert_all(home)
    assert [r["status"] for r in results] == ["reverted"]
    assert active_toxics("redis", configuration=configuration) == {"redis": []}
    started = time.perf_counter()
    client.ping()
    assert time.perf_counter() - started < 0.1


def test_remove_toxic_clears_only_its_fault(setup):
    configuration, _, home = setup
    tp.add_toxic(
        "redis", "latency", {"latency": 10}, stream="upstream", configuration=configuration
    )
    tp.add_toxic("redis", "bandwidth", {"rate": 1000}, configuration=configuration)
    assert tp.remove_toxic("redis", "latency_upstream", configuration=configuration)
    remaining = [f.revert["toxic"] for f in faults.active(home)]
    assert remaining == ["bandwidth_downstream"]
    assert tp.reset(configuration=configuration)
    assert faults.active(home) == []
    assert active_toxics(configuration=configuration) == {"redis": []}


def test_errors_say_what_to_fix(setup):
    configuration, _, _ = setup
    with pytest.raises(ActivityFailed, match=r"no proxy named 'nope'.*known: redis"):
        tp.partition(proxy="nope", configuration=configuration)
    with pytest.raises(ActivityFailed, match="unknown partition mode"):
        tp.partition(proxy="redis", mode="sever", configuration=configuration)
    with pytest.raises(ActivityFailed, match="refused toxic"):
        tp.add_toxic("redis", "no_such_toxic", configuration=configuration)
    unreachable = {"toxiproxy_url": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(ActivityFailed, match="cannot reach the Toxiproxy API"):
        tp.reset(configuration=unreachable)

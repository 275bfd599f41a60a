"""Soak verdicts over series sampled from real prometheus-client /metrics endpoints, and the
dead-letter stream growth verdict against a private Redis."""

import time

import pytest
import redis
from support.prom_endpoints import serve_metrics

from chaosmessaging import runs
from chaosmessaging.actions.sampling import sample_metrics
from chaosmessaging.probes import dead_letters, marks, trends

MEM = "process_resident_memory_bytes"
LAG = "messaging_consumer_lag_seconds"
MIB = 2**20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    return str(tmp_path)


def _sample(home: str, label: str, **series_per_service) -> dict:
    """Sample scripted endpoints (one per service) 11 times, 0.2 s apart; returns the config."""
    config = {"chaosmessaging_home": home}
    stops = []
    try:
        for service, series in series_per_service.items():
            url, stop = serve_metrics(series)
            stops.append(stop)
            config[f"messaging_{service}_url"] = url
        sample_metrics(
            2.0,
            interval_s=0.2,
            label=label,
            services=list(series_per_service),
            metrics=[MEM, LAG],
            configuration=config,
        )
    finally:
        for stop in stops:
            stop()
    marks.mark("method", configuration=config)
    return config


def test_verdicts_hold_trivially_before_the_method_and_fail_without_samples_after(home):
    config = {"chaosmessaging_home": home}
    assert trends.sampled_max_within("soak", LAG, 5, configuration=config)["ok"] is True
    assert trends.memory_growth_within("soak", 10, configuration=config)["ok"] is True
    marks.mark("method", configuration=config)
    lag = trends.sampled_max_within("soak", LAG, 5, configuration=config)
    memory = trends.memory_growth_within("soak", 10, configuration=config)
    assert lag["ok"] is False and "sample_metrics(label='soak')" in lag["reason"]
    assert memory["ok"] is False and "no samples" in memory["reason"]


def test_flat_memory_and_low_lag_pass_with_per_service_figures(home):
    config = _sample(
        home,
        "calm",
        api={MEM: lambda n: 100 * MIB + (n % 2) * MIB},  # noise, no trend
        consumer={MEM: lambda n: 80 * MIB, LAG: lambda n: 0.1 * (n % 3)},
    )
    lag = trends.sampled_max_within("calm", LAG, 5, service="consumer", configuration=config)
    assert lag["ok"] is True and lag["max"] == pytest.approx(0.2)
    assert lag["services"]["consumer"]["samples"] == 11
    memory = trends.memory_growth_within("calm", 10, configuration=config)
    assert memory["ok"] is True, memory
    assert set(memory["services"]) == {"api", "consumer"}
    api = memory["services"]["api"]
    assert api["window"] == 2 and abs(api["growth_percent"]) < 1.5


def test_a_single_lag_sample_over_the_limit_fails_and_says_when(home):
    config = _sample(
        home, "spike", consumer={MEM: lambda n: MIB, LAG: lambda n: 6.0 if n == 7 else 0.2}
    )
    lag = trends.sampled_max_within("spike", LAG, 5, service="consumer", configuration=config)
    assert lag["ok"] is False and lag["max"] == 6.0
    figures = lag["services"]["consumer"]
    assert figures["over_limit"] == 1 and 1.2 < figures["at_s"] < 1.8
    # the same series passes a limit above its max: the verdict is about the samples
    assert trends.sampled_max_within("spike", LAG, 6.5, configuration=config)["ok"] is True


def test_memory_growing_beyond_the_limit_fails_naming_the_service(home):
    # +5 % of the start per sample: windows of 2 samples, means 1.025 -> 1.475 (+43.9 %)
    config = _sample(
        home,
        "leak",
        api={MEM: lambda n: 100 * MIB},
        dispatcher={MEM: lambda n: 100 * MIB * (1 + 0.05 * n)},
    )
    memory = trends.memory_growth_within("leak", 10, configuration=config)
    assert memory["ok"] is False
    assert memory["services"]["api"]["ok"] is True
    leak = memory["services"]["dispatcher"]
    assert leak["ok"] is False and leak["growth_percent"] == pytest.approx(43.9, abs=0.1)
    assert leak["last_mean_bytes"] > leak["first_mean_bytes"]
    assert trends.memory_growth_within("leak", 50, configuration=config)["ok"] is True


def test_missing_metric_too_few_samples_or_bad_window_fail_with_a_reason(home):
    config = _sample(home, "few", api={MEM: lambda n: MIB})
    missing = trends.sampled_max_within("few", LAG, 5, service="api", configuration=config)
    assert missing["ok"] is False
    assert "no sample of messaging_consumer_lag_seconds" in missing["reason"]
    few = trends.memory_growth_within("few", 10, min_samples=50, configuration=config)
    assert few["ok"] is False and "11 samples" in few["reason"]
    bad = trends.memory_growth_within("few", 10, window_fraction=0.6, configuration=config)
    assert bad["ok"] is False and "window_fraction" in bad["reason"]


def test_dead_letter_stream_growth_is_judged_from_the_method_snapshot(home, redis_server):
    config = {
        "chaosmessaging_home": home,
        "messaging_redis_url": redis_server.url,
        "messaging_dead_stream": f"dead-{time.monotonic_ns()}",
    }
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(config["messaging_dead_stream"], {"reason": "old poison"})
    assert dead_letters.dead_letters_not_grown("soak", configuration=config)["ok"] is True
    marks.mark("method", configuration=config)
    assert dead_letters.dead_letters_not_grown("soak", configuration=config)["ok"] is False
    assert dead_letters.snapshot_dead_letters("soak", configuration=config) == 1
    held = dead_letters.dead_letters_not_grown("soak", configuration=config)
    assert {k: held[k] for k in ("ok", "before", "now", "grew")} == {
        "ok": True,
        "before": 1,
        "now": 1,
        "grew": 0,
    }
    assert "grew by 0" in held["reason"]
    client.xadd(config["messaging_dead_stream"], {"reason": "new poison"})
    grown = dead_letters.dead_letters_not_grown("soak", configuration=config)
    assert grown["ok"] is False and grown["grew"] == 1
    assert (
        dead_letters.dead_letters_not_grown("soak", max_growth=1, configuration=config)["ok"]
        is True
    )


ACCEPTED = "messaging_messages_accepted_total"


def _sample_with_messages(home: str, label: str, **series_per_service) -> dict:
    config = {"chaosmessaging_home": home}
    stops = []
    try:
        for service, series in series_per_service.items():
            url, stop = serve_metrics(series)
            stops.append(stop)
            config[f"messaging_{service}_url"] = url
        sample_metrics(
            2.0,
            interval_s=0.2,
            label=label,
            services=list(series_per_service),
            metrics=[MEM, ACCEPTED],
            configuration=config,
        )
    finally:
        for stop in stops:
            stop()
    marks.mark("method", configuration=config)
    return config


def test_a_kilobyte_per_message_fails_the_slope_though_memory_grew_a_few_percent(home):
    # 200 messages per sample; the API keeps ~1 KiB of each on 300 MiB, with allocator steps
    config = _sample_with_messages(
        home,
        "leak",
        api={
            ACCEPTED: lambda n: 200 * n,
            MEM: lambda n: 300 * MIB + 1024 * 200 * n + (n % 3) * 8192,
        },
        consumer={MEM: lambda n: 80 * MIB + (n % 2) * MIB},
    )
    memory = trends.memory_growth_within("leak", 20, configuration=config)
    assert memory["ok"] is True, memory  # +0.7 %: first vs last window cannot see it
    slope = trends.memory_per_message_within(
        "leak", 256, min_messages=500, min_samples=5, configuration=config
    )
    assert slope["ok"] is False, slope
    api, consumer = slope["services"]["api"], slope["services"]["consumer"]
    assert api["ok"] is False and 900 < api["bytes_per_message"] < 1150, api
    assert consumer["ok"] is True and abs(consumer["bytes_per_message"]) < 256, consumer
    assert "api +" in slope["reason"] and "limit < 256 B/message" in slope["reason"]


def test_the_slope_needs_messages_and_holds_before_the_method(home):
    config = {"chaosmessaging_home": home}
    assert trends.memory_per_message_within("idle", 256, configuration=config)["ok"] is True
    config = _sample_with_messages(
        home, "idle", api={ACCEPTED: lambda n: 0, MEM: lambda n: 100 * MIB}
    )
    verdict = trends.memory_per_message_within("idle", 256, min_samples=5, configuration=config)
    assert verdict["ok"] is False and "0 messages after the warm-up" in verdict["reason"]


def test_theil_sen_ignores_one_step():
    points = [(float(x), 10.0 * x + (5000.0 if x == 7 else 0.0)) for x in range(12)]
    assert trends.theil_sen(points) == pytest.approx(10.0)
    assert trends.theil_sen([(1.0, 1.0), (1.0, 2.0)]) is None

"""The participant cache verdicts against real prometheus-client /metrics endpoints whose
counters are scripted per scrape: they pass on a healthy series and fail when the ratio is low,
never recovers, or nothing was looked up."""

import time

import pytest
from support.prom_endpoints import serve_metrics

from chaosmessaging import runs
from chaosmessaging.probes import cache, marks, metrics

HITS, MISSES = cache.HITS, cache.MISSES


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    return str(tmp_path)


def _counters(hits_per_scrape):
    """Cumulative hit/miss counters: 10 lookups per scrape, `hits_per_scrape(n)` of them hits."""
    return {
        HITS: lambda n: sum(hits_per_scrape(i) for i in range(n + 1)),
        MISSES: lambda n: sum(10 - hits_per_scrape(i) for i in range(n + 1)),
    }


@pytest.fixture
def endpoint(home):
    stops = []

    def start(hits_per_scrape):
        url, stop = serve_metrics(_counters(hits_per_scrape))
        stops.append(stop)
        return {"chaosmessaging_home": home, "messaging_api_url": url}

    yield start
    for stop in stops:
        stop()


def test_hit_ratio_holds_before_the_method_then_is_judged_from_the_snapshot(endpoint):
    config = endpoint(lambda n: 9)
    assert cache.cache_hit_ratio_at_least("t2", 0.8, configuration=config)["ok"] is True
    marks.mark("method", configuration=config)
    missing = cache.cache_hit_ratio_at_least("t2", 0.8, configuration=config)
    assert missing["ok"] is False and "snapshot_metrics(label='t2')" in missing["reason"]
    metrics.snapshot_metrics("t2", configuration=config)
    held = cache.cache_hit_ratio_at_least("t2", 0.8, configuration=config)
    assert held["ok"] is True and held["ratio"] == pytest.approx(0.9)
    assert cache.cache_hit_ratio_at_least("t2", 0.95, configuration=config)["ok"] is False


def test_a_low_ratio_or_no_lookup_at_all_fails(endpoint, home):
    config = endpoint(lambda n: 2)
    marks.mark("method", configuration=config)
    metrics.snapshot_metrics("t2", configuration=config)
    low = cache.cache_hit_ratio_at_least("t2", 0.8, configuration=config)
    assert low["ok"] is False and low["ratio"] == pytest.approx(0.2)
    url, stop = serve_metrics({HITS: lambda n: 5, MISSES: lambda n: 5})  # nothing moves
    try:
        idle = {"chaosmessaging_home": home, "messaging_api_url": url}
        metrics.snapshot_metrics("idle", configuration=idle)
        verdict = cache.cache_hit_ratio_at_least("idle", 0.8, configuration=idle)
    finally:
        stop()
    assert verdict["ok"] is False and "no participant cache lookup" in verdict["reason"]


def test_recovery_is_measured_and_judged_against_the_limit(endpoint):
    config = endpoint(lambda n: 2 if n < 3 else 10)  # low for two windows, then all hits
    watched = cache.watch_hit_ratio_recovery(
        "t3", after_s=0, within_s=5, min_ratio=0.9, window_s=0.1, configuration=config
    )
    assert watched["recovered_after_s"] is not None and len(watched["windows"]) == 3
    marks.mark("method", configuration=config)
    assert cache.hit_ratio_recovered("t3", within_s=5, configuration=config)["ok"] is True
    assert cache.hit_ratio_recovered("t3", within_s=0.01, configuration=config)["ok"] is False


def test_a_hit_ratio_that_never_recovers_fails(endpoint):
    config = endpoint(lambda n: 5)
    watched = cache.watch_hit_ratio_recovery(
        "t3", after_s=0, within_s=0.5, min_ratio=0.9, window_s=0.1, configuration=config
    )
    assert watched["recovered_after_s"] is None and watched["windows"]
    marks.mark("method", configuration=config)
    verdict = cache.hit_ratio_recovered("t3", within_s=60, configuration=config)
    assert verdict["ok"] is False and "never got back" in verdict["reason"]

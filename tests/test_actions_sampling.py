"""sample_metrics against real prometheus-client /metrics endpoints on loopback."""

import json
import signal
import time

import pytest
from chaoslib.exceptions import ActivityFailed
from support.prom_endpoints import serve_metrics

from chaosmessaging import runs
from chaosmessaging.actions import sampling
from chaosmessaging.clients import samples
from chaosmessaging.controls import safety
from chaosmessaging.stack.servers import free_port

MEM = "process_resident_memory_bytes"
LAG = "messaging_consumer_lag_seconds"


@pytest.fixture
def run_home(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def endpoints():
    stops = []

    def start(series):
        url, stop = serve_metrics(series)
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


def _config(home, **urls) -> dict:
    return {
        "chaosmessaging_home": str(home),
        **{f"messaging_{name}_url": url for name, url in urls.items()},
    }


def test_records_every_tick_of_every_service_with_the_scraped_values(run_home, endpoints):
    api = endpoints({MEM: lambda n: 1000.0 + n})
    consumer = endpoints({MEM: lambda n: 5000.0, LAG: lambda n: 0.5 * n})
    summary = sampling.sample_metrics(
        1.0,
        interval_s=0.2,
        label="t",
        services=["api", "consumer"],
        metrics=[MEM, LAG],
        configuration=_config(run_home, api=api, consumer=consumer),
    )
    assert summary["ticks"] == 6 and summary["errors"] == {"api": 0, "consumer": 0}
    recorded = json.loads((samples.samples_path("t", str(run_home))).read_text())
    assert recorded == samples.read_samples("t", str(run_home))
    api_series = recorded["services"]["api"]
    assert api_series[MEM] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0, 1005.0]
    assert api_series[LAG] == [None] * 6  # the api does not expose it: a gap, not an error
    assert recorded["services"]["consumer"][LAG] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    times = api_series["t"]
    assert times == sorted(times) and 0.9 < times[-1] < 1.5
    assert summary["figures"]["consumer"][LAG] == {
        "count": 6,
        "min": 0.0,
        "mean": 1.25,
        "max": 2.5,
        "first": 0.0,
        "last": 2.5,
    }
    assert summary["figures"]["api"][LAG] == {"count": 0}


def test_an_unreachable_service_is_a_counted_gap_not_a_failure(run_home, endpoints):
    api = endpoints({MEM: lambda n: 1.0})
    dead = f"http://127.0.0.1:{free_port()}"
    summary = sampling.sample_metrics(
        0.4,
        interval_s=0.2,
        label="gap",
        services=["api", "consumer"],
        metrics=[MEM],
        configuration=_config(run_home, api=api, consumer=dead),
    )
    assert summary["errors"] == {"api": 0, "consumer": summary["ticks"]}
    recorded = samples.read_samples("gap", str(run_home))
    assert recorded["services"]["consumer"][MEM] == [None] * summary["ticks"]
    assert recorded["services"]["api"][MEM] == [1.0] * summary["ticks"]


def test_stops_at_once_when_the_safety_net_saw_an_interruption(run_home, endpoints, monkeypatch):
    api = endpoints({MEM: lambda n: 1.0})
    monkeypatch.setattr(safety, "_stop_signal", signal.SIGTERM)
    started = time.monotonic()
    summary = sampling.sample_metrics(
        60,
        interval_s=0.5,
        services=["api"],
        metrics=[MEM],
        configuration=_config(run_home, api=api),
    )
    assert time.monotonic() - started < 5
    assert summary["ticks"] == 1 and summary["interrupted"] is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"duration_s": 10, "interval_s": 0.1}, "below 0.2"),
        ({"duration_s": 3600, "interval_s": 0.2, "max_samples": 1000}, "max_samples"),
        ({"duration_s": 0, "interval_s": 1}, "positive"),
        ({"duration_s": 1, "label": "../x"}, "label"),
        ({"duration_s": 1, "services": ["websocket"]}, "unknown service"),
    ],
)
def test_refuses_unbounded_or_malformed_sampling_before_scraping(run_home, kwargs, message):
    with pytest.raises(ActivityFailed, match=message):
        sampling.sample_metrics(configuration=_config(run_home), **kwargs)

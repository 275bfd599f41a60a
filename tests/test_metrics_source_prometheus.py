"""`metrics_source: prometheus`: verdicts read PromQL summed over replicas, not one scrape.

The reference API runs as two replicas (each with its two worker processes) behind one address, a
tiny round-robin TCP front like a Kubernetes Service; a real Prometheus (Debian's package)
scrapes both replicas. Requests through the front land on both; a direct scrape through the same
address reads one replica, Prometheus reads the sum.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import runs
from chaosmessaging.clients.prometheus import PrometheusSource, ScrapeSource, metrics_source
from chaosmessaging.controls.validation import configuration_errors
from chaosmessaging.probes import metrics
from chaosmessaging.stack import prometheus
from chaosmessaging.stack.servers import free_port
from chaosmessaging.targets import TargetRefused

NO_PROMETHEUS = (
    "no prometheus binary: Debian's `prometheus` package is not installed "
    "(.ci/run installs it as root; or set CHAOSMESSAGING_PROMETHEUS_BIN)"
)
UNAUTHORIZED = "messaging_api_unauthorized_total"


def _has_prometheus() -> bool:
    return bool(os.environ.get(prometheus.BIN_ENV) or shutil.which("prometheus"))


class RoundRobinFront:
    """A TCP front on loopback handing each new connection to the next upstream in turn (what a
    Kubernetes Service or any load balancer does to a scrape)."""

    def __init__(self, upstreams: list[int]):
        self.port = free_port()
        self._next = itertools.cycle(upstreams)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer):
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", next(self._next)
        )
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
        )

    def _run(self):
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _start_api(port: int, log) -> subprocess.Popen:
    # no PostgreSQL or Redis behind it: a request without a token is refused (401) and counted
    # before any of them is needed, which is all this test sends
    env = {
        **os.environ,
        "MSGSTACK_HOST": "127.0.0.1",
        "MSGSTACK_PORT": str(port),
        "MSGSTACK_PG_DSN": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        "MSGSTACK_REDIS_URL": f"redis://127.0.0.1:{free_port()}",
        "MSGSTACK_API_WORKERS": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "msgstack", "api"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout:g} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def two_replicas_and_prometheus(tmp_path):
    """Two API replicas behind one round-robin address, and a Prometheus scraping both."""
    ports = [free_port(), free_port()]
    procs = []
    log = open(tmp_path / "api.log", "ab")
    try:
        procs += [_start_api(port, log) for port in ports]
        for port in ports:
            _wait_http(f"http://127.0.0.1:{port}/healthz")
        prom_port = free_port()
        procs.append(
            prometheus.start_prometheus(
                tmp_path / "prometheus",
                prom_port,
                {"api": [f"127.0.0.1:{p}" for p in ports]},
                interval_s=1.0,
            )
        )
        with RoundRobinFront(ports) as front:
            yield front.port, f"http://127.0.0.1:{prom_port}", tmp_path
    finally:
        for proc in procs:
            _stop(proc)
        log.close()


@pytest.mark.slow
@pytest.mark.skipif(not _has_prometheus(), reason=NO_PROMETHEUS)
def test_promql_verdict_counts_both_replicas_while_a_scrape_through_the_address_sees_one(
    two_replicas_and_prometheus,
):
    front, prometheus_url, home = two_replicas_and_prometheus
    scraped = {"chaosmessaging_home": str(home), "messaging_api_url": f"http://127.0.0.1:{front}"}
    promql = {**scraped, "metrics_source": "prometheus", "prometheus_url": prometheus_url}
    assert isinstance(metrics_source("api", configuration=scraped), ScrapeSource)
    assert isinstance(metrics_source("api", configuration=promql), PrometheusSource)
    runs.new_run(str(home))
    # both replicas are targets, both up (the freshness wait inside every read needs them)
    assert metrics_source("api", configuration=promql).wait_fresh() == 2
    for config, label in ((scraped, "scrape"), (promql, "promql")):
        metrics.snapshot_metric(
            label, UNAUTHORIZED, {"reason": "missing"}, default=0.0, configuration=config
        )
    runs.record("mark:method", time.time(), home=str(home))

    requests = 10
    for _ in range(requests):  # a new connection each: the front alternates replicas
        assert httpx.get(f"http://127.0.0.1:{front}/v1/conversations").status_code == 401

    one_replica = metrics.metric_value(UNAUTHORIZED, {"reason": "missing"}, configuration=scraped)
    all_replicas = metrics.metric_value(UNAUTHORIZED, {"reason": "missing"}, configuration=promql)
    assert one_replica == requests / 2
    assert all_replicas == requests

    counted = metrics.metric_increased(
        "promql", UNAUTHORIZED, {"reason": "missing"}, min_increase=requests, configuration=promql
    )
    assert counted["ok"], counted["reason"]
    assert counted["grew"] == requests
    # the same verdict on a scrape through the one address misses the other replica's half
    missed = metrics.metric_increased(
        "scrape", UNAUTHORIZED, {"reason": "missing"}, min_increase=requests, configuration=scraped
    )
    assert not missed["ok"]
    assert missed["grew"] < requests


def test_metrics_source_must_be_known_and_prometheus_needs_a_url(tmp_path):
    home = str(tmp_path)
    with pytest.raises(ActivityFailed, match="metrics_source 'graphite' is not one of"):
        metrics_source(
            "api", configuration={"chaosmessaging_home": home, "metrics_source": "graphite"}
        )
    errors = configuration_errors(
        {"method": []}, {"chaosmessaging_home": home, "metrics_source": "prometheus"}
    )
    assert any("no prometheus_url is set" in e for e in errors), errors


def test_prometheus_url_goes_through_the_target_allow_list_before_any_call(tmp_path):
    config = {
        "chaosmessaging_home": str(tmp_path),
        "metrics_source": "prometheus",
        "prometheus_url": "http://prometheus.monitoring.svc:9090",
    }
    with pytest.raises(TargetRefused, match="prometheus_url"):
        metrics_source("api", configuration=config)
    errors = configuration_errors({"method": []}, config)
    assert any(e.startswith("prometheus_url points at prometheus.monitoring.svc") for e in errors)
    allowed = {**config, "allow_hosts": "prometheus.monitoring.svc"}
    source = metrics_source("api", configuration=allowed)
    assert source.selector == 'job="api"'
    with_selector = {
        **allowed,
        "prometheus_selectors": '{"api": "namespace=\\"chat\\",app=\\"api\\""}',
    }
    assert (
        metrics_source("api", configuration=with_selector).selector == 'namespace="chat",app="api"'
    )


@pytest.mark.slow
@pytest.mark.skipif(not _has_prometheus(), reason=NO_PROMETHEUS)
def test_stack_up_with_prometheus_scrapes_the_stack_and_down_stops_it(tmp_path):
    from chaosmessaging.stack import launcher

    home = tmp_path / "stack"
    state = launcher.up(home, proxy_port=free_port(), prometheus=True)
    try:
        record = state.services["prometheus"]
        assert record.alive() and record.health == "/-/ready"
        api = state.services["api"].address
        for _ in range(3):
            assert httpx.get(f"{api}/v1/conversations").status_code == 401
        scraped = {"chaosmessaging_home": str(home)}
        promql = {**scraped, "metrics_source": "prometheus"}  # prometheus_url from the stack
        source = metrics_source("api", configuration=promql)
        assert isinstance(source, PrometheusSource) and source.base_url == record.address
        # one replica here: both roads read the same figure
        direct = metrics.metric_value(UNAUTHORIZED, {"reason": "missing"}, configuration=scraped)
        assert direct == 3.0
        assert (
            metrics.metric_value(UNAUTHORIZED, {"reason": "missing"}, configuration=promql) == 3.0
        )
    finally:
        stopped = launcher.down(home)
    assert "prometheus" in stopped
    assert not record.alive()


@pytest.mark.slow
@pytest.mark.skipif(not _has_prometheus(), reason=NO_PROMETHEUS)
def test_histogram_quantile_sums_the_buckets_of_every_replica(tmp_path):
    """Two replicas exporting one histogram (prometheus-client's own exposition): one answers in
    10 ms, the other in 500 ms. The p95 over both is slow; a scrape of one replica says fast."""
    from prometheus_client import CollectorRegistry, Histogram, start_http_server

    ports, histograms, servers = [free_port(), free_port()], [], []
    for port in ports:
        registry = CollectorRegistry()
        histograms.append(
            Histogram("demo_latency_seconds", "demo", buckets=(0.05, 0.1, 1.0), registry=registry)
        )
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry))
    prom_port = free_port()
    proc = prometheus.start_prometheus(
        tmp_path / "prometheus", prom_port, {"api": [f"127.0.0.1:{p}" for p in ports]}
    )
    try:
        fast = {
            "chaosmessaging_home": str(tmp_path),
            "messaging_api_url": f"http://127.0.0.1:{ports[0]}",
        }
        promql = {
            **fast,
            "metrics_source": "prometheus",
            "prometheus_url": f"http://127.0.0.1:{prom_port}",
        }
        runs.new_run(str(tmp_path))
        metrics.snapshot_metrics("one", prefix="demo_", configuration=fast)
        metrics.snapshot_metrics("all", prefix="demo_", configuration=promql)
        runs.record("mark:method", time.time(), home=str(tmp_path))
        for _ in range(50):
            histograms[0].observe(0.01)
            histograms[1].observe(0.5)
        one = metrics.histogram_quantile_within(
            "one", "demo_latency_seconds", 0.1, configuration=fast
        )
        both = metrics.histogram_quantile_within(
            "all", "demo_latency_seconds", 0.1, configuration=promql
        )
    finally:
        _stop(proc)
        for server, _thread in servers:
            server.shutdown()
    assert one["ok"] and one["observations"] == 50 and one["value"] <= 0.05
    assert not both["ok"] and both["observations"] == 100 and both["value"] > 0.1

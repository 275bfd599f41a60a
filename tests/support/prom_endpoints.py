"""Real Prometheus /metrics endpoints for tests: prometheus-client's own HTTP server, each with a
private registry whose gauges are computed per scrape (so a test scripts a series: flat, growing,
one spike) without sleeping to change them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from chaosmessaging.stack.servers import free_port

#: metric name -> f(n) giving its value at the n-th scrape (n = 0, 1, ...)
Series = dict[str, Callable[[int], float]]


class _Scripted:
    def __init__(self, series: Series):
        self.series = series
        self.scrapes = itertools.count()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        n = next(self.scrapes)
        for name, value in self.series.items():
            yield GaugeMetricFamily(name, f"scripted {name}", value=value(n))


def serve_metrics(series: Series) -> tuple[str, Callable[[], None]]:
    """Start a loopback /metrics endpoint serving `series`; returns (base URL, stop)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scripted(series))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return f"http://127.0.0.1:{port}", stop

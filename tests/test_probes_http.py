"""HTTP readiness and Prometheus probes against real HTTP servers on loopback."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chaoslib.exceptions import ActivityFailed
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from chaosmessaging.probes import http, metrics
from chaosmessaging.stack import servers


class _Service:
    """A stand-in service: `/readyz` as the contract says, `/metrics` from its own registry."""

    def __init__(self):
        self.ready = True
        self.registry = CollectorRegistry()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/readyz":
                    status = 200 if service.ready else 503
                    body = (
                        b'{"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}'
                        if service.ready
                        else b'{"status": "degraded", "checks": {"postgres": "ok", '
                        b'"redis": "connection refused"}}'
                    )
                    kind = "application/json"
                elif self.path == "/metrics":
                    status, body, kind = 200, generate_latest(service.registry), "text/plain"
                else:
                    status, body, kind = 404, b"not found", "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", servers.free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    running = _Service()
    yield running
    running.close()


@pytest.fixture
def unused_url():
    return f"http://127.0.0.1:{servers.free_port()}"


def test_readiness_reports_status_and_checks_of_the_configured_service(service):
    config = {"messaging_consumer_url": service.url}
    assert http.readiness(service="consumer", configuration=config) == {
        "status_code": 200,
        "ready": True,
        "status": "ok",
        "checks": {"postgres": "ok", "redis": "ok"},
        "error": None,
    }
    service.ready = False
    answer = http.readiness(url=f"{service.url}/readyz")
    assert answer["status_code"] == 503 and answer["ready"] is False
    assert answer["checks"]["redis"] == "connection refused"
    assert http.service_ready(service="consumer", configuration=config)["ok"] is False


def test_unreachable_service_fails_unless_told_it_may_be_down(unused_url):
    config = {"messaging_api_url": unused_url}
    with pytest.raises(ActivityFailed, match="cannot reach .*chaosmessaging stack status"):
        http.readiness(configuration=config)
    with pytest.raises(ActivityFailed):
        http.service_ready(configuration=config)
    down = http.readiness(unreachable_ok=True, configuration=config)
    assert down["ready"] is False and down["status_code"] == 0 and "cannot reach" in down["error"]
    assert http.service_ready(unreachable_ok=True, configuration=config)["ok"] is False


def test_wait_until_ready_measures_recovery_by_polling(service):
    service.ready = False
    threading.Timer(0.6, lambda: setattr(service, "ready", True)).start()
    waited = http.wait_until_ready(
        timeout=5, interval=0.1, configuration={"messaging_api_url": service.url}
    )
    assert waited["ready"] is True and 0.5 <= waited["waited_s"] < 3
    assert waited["attempts"] >= 3


def test_wait_until_ready_fails_with_the_last_answer(service):
    service.ready = False
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match="not ready after 0.5s.*503.*connection refused"):
        http.wait_until_ready(timeout=0.5, interval=0.1, url=f"{service.url}/readyz")
    assert time.monotonic() - started < 2


@pytest.fixture
def metered(service):
    delivered = Counter("messaging_consumer_delivered", "delivered", registry=service.registry)
    delivered.inc(7)
    closes = Counter("ws_close", "closes", ["code"], registry=service.registry)
    closes.labels(code="1000").inc(3)
    closes.labels(code="1011").inc(2)
    Gauge("messaging_consumer_pel_size", "pel", registry=service.registry).set(4)
    sizes = Histogram(
        "messaging_message_size_bytes", "size", buckets=(1024, 65536), registry=service.registry
    )
    for size in (512, 2048, 4096):
        sizes.observe(size)
    return service


def test_metric_value_reads_counters_gauges_histograms_and_labels(metered):
    config = {"messaging_api_url": metered.url}
    assert metrics.metric_value("messaging_consumer_delivered_total", configuration=config) == 7
    assert metrics.metric_value("messaging_consumer_delivered", configuration=config) == 7
    assert metrics.metric_value("messaging_consumer_pel_size", configuration=config) == 4
    assert metrics.metric_value("ws_close_total", {"code": 1011}, configuration=config) == 2
    assert metrics.metric_value("ws_close_total", configuration=config) == 5
    assert metrics.metric_value("messaging_message_size_bytes_count", configuration=config) == 3
    assert (
        metrics.metric_value("messaging_message_size_bytes_sum", configuration=config)
        == 512 + 2048 + 4096
    )
    assert (
        metrics.metric_value(
            "messaging_message_size_bytes_bucket", {"le": "1024.0"}, url=f"{metered.url}/metrics"
        )
        == 1
    )


def test_missing_metric_names_close_matches_unless_a_default_is_given(metered):
    config = {"messaging_api_url": metered.url}
    with pytest.raises(ActivityFailed, match="messaging_consumer_delivered_total"):
        metrics.metric_value("messaging_consumer_delivred_total", configuration=config)
    with pytest.raises(ActivityFailed, match="labels .*'code': '1006'.* match none"):
        metrics.metric_value("ws_close_total", {"code": "1006"}, configuration=config)
    assert metrics.metric_value("nope_total", default=0, configuration=config) == 0.0


def test_metric_sum_adds_a_metric_across_services(metered):
    other = _Service()
    try:
        Counter("messaging_consumer_delivered", "d", registry=other.registry).inc(5)
        urls = [f"{metered.url}/metrics", f"{other.url}/metrics"]
        assert metrics.metric_sum("messaging_consumer_delivered_total", urls=urls) == 12
        config = {
            "messaging_api_url": metered.url,
            "messaging_consumer_url": other.url,
            "messaging_dispatcher_url": other.url,
        }
        assert (
            metrics.metric_sum("ws_close_total", services=["api", "consumer"], configuration=config)
            == 5
        )
    finally:
        other.close()


def test_metrics_from_an_unreachable_or_wrong_endpoint_fail_clearly(service, unused_url):
    with pytest.raises(ActivityFailed, match="cannot reach"):
        metrics.metric_value("x", url=f"{unused_url}/metrics")
    with pytest.raises(ActivityFailed, match="HTTP 404"):
        metrics.metric_value("x", url=f"{service.url}/nothing", default=0)

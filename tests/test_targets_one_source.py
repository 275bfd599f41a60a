"""The fault goes where the run points, or nowhere (issue 18.2, 18.6).

A run's targets come from one source; a half-configured platform is a configuration error naming
the missing keys before anything starts; a network fault is injected only through a proxy that
fronts the configured dependency; a Toxiproxy URL that is not a Toxiproxy API, a URL with a path,
port 0 and an invalid CIDR in allow_hosts each get a sentence. Real fault proxy, real HTTP server.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import faults, targets
from chaosmessaging.actions import toxiproxy as tp
from chaosmessaging.controls import validation
from chaosmessaging.probes.toxiproxy import active_toxics
from chaosmessaging.proxy import BackgroundProxyServer
from chaosmessaging.stack.servers import free_port

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
TARGET_ENVS = [
    "CHAOSMESSAGING_API_URL",
    "CHAOSMESSAGING_AUTH_URL",
    "CHAOSMESSAGING_REDIS_URL",
    "CHAOSMESSAGING_PG_DSN",
    "CHAOSMESSAGING_TOXIPROXY_URL",
    "CHAOSMESSAGING_DISPATCHER_URL",
    "CHAOSMESSAGING_CONSUMER_URL",
    "CHAOSMESSAGING_GATEWAY_URL",
    targets.ALLOW_ENV,
]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in TARGET_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path / "no-stack-here"))
    return monkeypatch


def _experiment(name: str) -> dict:
    return json.loads((EXPERIMENTS / f"{name}.json").read_text())


def test_a_platform_without_its_toxiproxy_url_is_a_configuration_error(clean_env):
    """The user's scenario: API, auth, Redis and PostgreSQL set, Toxiproxy URL forgotten."""
    for name, value in {
        "CHAOSMESSAGING_API_URL": "http://127.0.0.1:18080",
        "CHAOSMESSAGING_AUTH_URL": "http://127.0.0.1:18081",
        "CHAOSMESSAGING_REDIS_URL": "redis://127.0.0.1:16379/0",
        "CHAOSMESSAGING_PG_DSN": "postgresql://app@127.0.0.1:15432/messaging",
    }.items():
        clean_env.setenv(name, value)
    errors = validation.target_errors(_experiment("redis_latency"), {})
    assert len(errors) == 1, errors
    assert "half-configured" in errors[0]
    assert "toxiproxy_url (CHAOSMESSAGING_TOXIPROXY_URL" in errors[0]
    assert "default http://127.0.0.1:8474" in errors[0]
    with pytest.raises(SystemExit) as stopped:
        validation.before_experiment_control(_experiment("redis_latency"), {})
    assert stopped.value.code == validation.EXIT_WITHOUT_ROLLBACKS
    journal: dict = {}
    validation.after_experiment_control(_experiment("redis_latency"), journal, {})
    assert journal["deviated"] is False and "chaosmessaging_configuration_error" in journal
    clean_env.setenv("CHAOSMESSAGING_TOXIPROXY_URL", "http://127.0.0.1:18474")
    assert validation.target_errors(_experiment("redis_latency"), {}) == []


def test_one_address_set_beside_the_embedded_stack_is_an_error(clean_env):
    clean_env.setenv("CHAOSMESSAGING_REDIS_URL", "redis://127.0.0.1:16379/0")
    errors = validation.target_errors(_experiment("redis_latency"), {})
    assert any("half-configured" in e and "embedded stack" in e for e in errors), errors
    assert "messaging_api_url (CHAOSMESSAGING_API_URL" in errors[0]


def test_the_embedded_stack_alone_and_an_explicit_platform_alone_are_fine(clean_env):
    assert validation.target_errors(_experiment("redis_latency"), {}) == []
    clean_env.setenv("CHAOSMESSAGING_API_URL", "http://127.0.0.1:18080")
    # this experiment injects no network fault: the proxy's address is not needed
    assert not any(
        "toxiproxy_url" in e for e in validation.target_errors(_experiment("sustained_login"), {})
    )


@pytest.mark.parametrize(
    "env,words",
    [
        ({"CHAOSMESSAGING_API_URL": "http://127.0.0.1:8080/api/v1"}, "has a path (/api/v1)"),
        ({"CHAOSMESSAGING_API_URL": "127.0.0.1:8080"}, "has no scheme"),
        ({"CHAOSMESSAGING_REDIS_URL": "redis://127.0.0.1:0/0"}, "port 0"),
        ({targets.ALLOW_ENV: "10.0.0.0/33"}, "'10.0.0.0/33' is not a valid IP address or CIDR"),
        ({targets.ALLOW_ENV: "http://db:5432"}, "no scheme, port or path"),
    ],
)
def test_malformed_addresses_get_a_sentence_naming_the_key(clean_env, env, words):
    for name, value in env.items():
        clean_env.setenv(name, value)
    errors = validation.target_errors(_experiment("sustained_login"), {})
    assert any(words in e for e in errors), errors


@pytest.fixture
def proxy_in_front(redis_server, tmp_path):
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
        yield proxy.url, listen, redis_server, tmp_path


def test_a_proxy_that_does_not_front_the_configured_redis_gets_no_fault(proxy_in_front):
    api, listen, redis_server, home = proxy_in_front
    elsewhere = {
        "toxiproxy_url": api,
        "chaosmessaging_home": str(home),
        "messaging_redis_url": f"redis://127.0.0.1:{free_port()}/0",  # another Redis
    }
    with pytest.raises(ActivityFailed, match="does not front the configured dependency"):
        tp.add_latency("redis", 300, configuration=elsewhere)
    with pytest.raises(ActivityFailed, match="does not front"):
        tp.partition("redis", configuration=elsewhere)
    assert active_toxics("redis", configuration=elsewhere) == {"redis": []}
    assert faults.active(home) == []
    # through its listen address (the embedded stack's way) or its upstream: accepted
    for redis_url in (
        f"redis://127.0.0.1:{listen}/0",
        f"redis://localhost:{redis_server.port}/0",
    ):
        ok = {**elsewhere, "messaging_redis_url": redis_url}
        tp.add_latency("redis", 1, configuration=ok)
        tp.heal("redis", configuration=ok)


def test_a_toxic_stream_outside_upstream_downstream_is_refused(proxy_in_front):
    api, _, _, home = proxy_in_front
    configuration = {"toxiproxy_url": api, "chaosmessaging_home": str(home)}
    with pytest.raises(ActivityFailed, match="'sideways' must be 'upstream' or 'downstream'"):
        tp.add_latency("redis", 10, stream="sideways", configuration=configuration)
    assert faults.active(home) == []


def test_a_toxiproxy_url_that_is_not_a_toxiproxy_api_gets_a_sentence(tmp_path):
    class NotToxiproxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            body = b"<html>the platform's API</html>"
            self.send_response(404 if self.path != "/version" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotToxiproxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = {
            "toxiproxy_url": f"http://127.0.0.1:{server.server_port}",
            "chaosmessaging_home": str(tmp_path),
        }
        with pytest.raises(ActivityFailed, match="answers HTTP but is not a Toxiproxy API"):
            tp.add_latency("redis", 10, configuration=configuration)
        configuration["toxiproxy_url"] += "/toxiproxy"
        with pytest.raises(ActivityFailed, match="has a path"):
            tp.add_latency("redis", 10, configuration=configuration)
    finally:
        server.shutdown()
    assert faults.active(tmp_path) == []


def test_address_looks_up_and_checks_in_one_call(clean_env):
    assert (
        targets.address("toxiproxy_url", {"toxiproxy_url": "http://127.0.0.1:1"})
        == "http://127.0.0.1:1"
    )
    with pytest.raises(targets.TargetRefused, match="messaging_api_url"):
        targets.address("messaging_api_url", {"messaging_api_url": "http://10.9.9.9:80"})
    assert targets.address("messaging_api_url", {}, required=False) is None


def test_rediss_to_a_plain_redis_says_the_server_has_no_tls(redis_server):
    from chaosmessaging.clients import redis as redis_client

    client, url = redis_client.redis_client(f"rediss://{redis_server.host}:{redis_server.port}/0")
    with pytest.raises(ActivityFailed, match="does not speak TLS.*use redis://"):
        redis_client.call(url, client.ping)

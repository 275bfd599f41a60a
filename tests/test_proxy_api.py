"""The fault proxy speaks Toxiproxy's HTTP API: routes, JSON shapes, status codes, error bodies.

Also: the toxiproxy-python client works against it unchanged, and `python -m chaosmessaging.proxy`
starts from a config file and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from chaosmessaging.proxy import BackgroundProxyServer
from chaosmessaging.stack import servers


@pytest.fixture(scope="module")
def proxy_server() -> Iterator[BackgroundProxyServer]:
    with BackgroundProxyServer() as server:
        yield server


@pytest.fixture()
def api(proxy_server: BackgroundProxyServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy_server.url, timeout=10) as client:
        yield client
        for name in list(client.get("/proxies").json()):
            client.delete(f"/proxies/{name}")


def _connectable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_version_answers_json(api: httpx.Client) -> None:
    r = api.get("/version")
    assert r.status_code == 200
    assert isinstance(r.json()["version"], str)


def test_create_proxy_returns_201_with_bound_listen_address(api, redis_server) -> None:
    r = api.post(
        "/proxies",
        json={
            "name": "redis",
            "listen": "127.0.0.1:0",
            "upstream": f"127.0.0.1:{redis_server.port}",
        },
    )
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"name", "listen", "upstream", "enabled", "toxics"}
    assert body["name"] == "redis" and body["enabled"] is True and body["toxics"] == []
    assert body["upstream"] == f"127.0.0.1:{redis_server.port}"
    host, port = body["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert _connectable(body["listen"])
    assert api.get("/proxies").json() == {"redis": body}
    assert api.get("/proxies/redis").json() == body


def test_create_duplicate_proxy_is_409(api) -> None:
    assert api.post("/proxies", json={"name": "a", "upstream": "127.0.0.1:1"}).status_code == 201
    r = api.post("/proxies", json={"name": "a", "upstream": "127.0.0.1:1"})
    assert r.status_code == 409
    assert r.json() == {"error": "proxy already exists", "status": 409}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"upstream": "127.0.0.1:1"}, "missing required field: name"),
        ({"name": "x"}, "missing required field: upstream"),
    ],
)
def test_create_proxy_without_required_field_is_400(api, body, message) -> None:
    r = api.post("/proxies", json=body)
    assert r.status_code == 400
    assert r.json() == {"error": message, "status": 400}


def test_create_proxy_with_bad_json_or_address_is_400(api) -> None:
    r = api.post("/proxies", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"].startswith("bad request body")
    r = api.post("/proxies", json={"name": "x", "upstream": "no-port"})
    assert r.status_code == 400 and "upstream" in r.json()["error"]


def test_unknown_proxy_and_toxic_are_404(api) -> None:
    for method, path in [
        ("GET", "/proxies/nope"),
        ("DELETE", "/proxies/nope"),
        ("POST", "/proxies/nope"),
        ("GET", "/proxies/nope/toxics"),
        ("POST", "/proxies/nope/toxics"),
    ]:
        r = api.request(method, path, json={})
        assert r.status_code == 404, (method, path)
        assert r.json() == {"error": "proxy not found", "status": 404}
    api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:1"})
    for method in ("GET", "DELETE", "POST"):
        r = api.request(method, "/proxies/p/toxics/nope", json={})
        assert r.status_code == 404
        assert r.json() == {"error": "toxic not found", "status": 404}


def test_toxic_lifecycle_defaults_update_and_delete(api) -> None:
    api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:1"})
    r = api.post("/proxies/p/toxics", json={"type": "latency", "attributes": {"latency": 100}})
    assert r.status_code == 200
    assert r.json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 100, "jitter": 0},
    }
    r = api.post(
        "/proxies/p/toxics",
        json={"type": "latency", "stream": "upstream", "name": "slow", "toxicity": 0.5},
    )
    assert r.json()["name"] == "slow" and r.json()["toxicity"] == 0.5
    assert [t["name"] for t in api.get("/proxies/p/toxics").json()] == [
        "latency_downstream",
        "slow",
    ]
    assert len(api.get("/proxies/p").json()["toxics"]) == 2

    r = api.post("/proxies/p/toxics/slow", json={"attributes": {"jitter": 5}, "toxicity": 1})
    assert r.status_code == 200
    assert r.json()["attributes"] == {"latency": 0, "jitter": 5} and r.json()["toxicity"] == 1
    assert (
        api.patch("/proxies/p/toxics/slow", json={"attributes": {"latency": 7}}).json()[
            "attributes"
        ]["latency"]
        == 7
    )
    assert api.get("/proxies/p/toxics/slow").json()["attributes"] == {"latency": 7, "jitter": 5}

    assert api.delete("/proxies/p/toxics/slow").status_code == 204
    assert [t["name"] for t in api.get("/proxies/p/toxics").json()] == ["latency_downstream"]


def test_toxic_errors_match_toxiproxy(api) -> None:
    api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:1"})
    api.post("/proxies/p/toxics", json={"type": "timeout"})
    r = api.post("/proxies/p/toxics", json={"type": "timeout"})
    assert r.status_code == 409
    assert r.json() == {"error": "toxic already exists", "status": 409}
    r = api.post("/proxies/p/toxics", json={"type": "teleport"})
    assert r.json() == {"error": "invalid toxic type", "status": 400}
    r = api.post("/proxies/p/toxics", json={"type": "latency", "stream": "sideways"})
    assert r.json() == {
        "error": "stream was invalid, can be either upstream or downstream",
        "status": 400,
    }
    r = api.post(
        "/proxies/p/toxics",
        json={"type": "latency", "name": "l", "attributes": {"latency": "fast"}},
    )
    assert r.status_code == 400 and r.json()["error"].startswith("bad request body")


def test_every_documented_toxic_type_is_accepted(api) -> None:
    api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:1"})
    expected = {
        "latency": {"latency", "jitter"},
        "bandwidth": {"rate"},
        "slow_close": {"delay"},
        "timeout": {"timeout"},
        "reset_peer": {"timeout"},
        "slicer": {"average_size", "size_variation", "delay"},
        "limit_data": {"bytes"},
    }
    for toxic_type, attributes in expected.items():
        r = api.post("/proxies/p/toxics", json={"type": toxic_type})
        assert r.status_code == 200, r.text
        assert set(r.json()["attributes"]) == attributes


def test_disable_update_and_enable_proxy(api) -> None:
    created = api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:1"}).json()
    assert _connectable(created["listen"])
    r = api.post("/proxies/p", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert not _connectable(created["listen"])
    r = api.patch("/proxies/p", json={"enabled": True, "upstream": "127.0.0.1:2"})
    assert r.json()["enabled"] is True and r.json()["upstream"] == "127.0.0.1:2"
    assert r.json()["listen"] == created["listen"]  # same port after re-enable
    assert _connectable(created["listen"])
    new_port = servers.free_port()
    r = api.post("/proxies/p", json={"listen": f"127.0.0.1:{new_port}"})
    assert r.json()["listen"] == f"127.0.0.1:{new_port}"
    assert _connectable(f"127.0.0.1:{new_port}") and not _connectable(created["listen"])


def test_delete_proxy_is_204_and_closes_listener(api) -> None:
    listen = api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:1"}).json()["listen"]
    assert api.delete("/proxies/p").status_code == 204
    assert api.get("/proxies/p").status_code == 404
    assert not _connectable(listen)


def test_populate_creates_keeps_unchanged_and_replaces_changed(api) -> None:
    ports = [servers.free_port() for _ in range(2)]
    wanted = [
        {"name": "redis", "listen": f"127.0.0.1:{ports[0]}", "upstream": "127.0.0.1:1"},
        {"name": "postgres", "listen": f"127.0.0.1:{ports[1]}", "upstream": "127.0.0.1:2"},
    ]
    r = api.post("/populate", json=wanted)
    assert r.status_code == 201
    assert [p["name"] for p in r.json()["proxies"]] == ["redis", "postgres"]
    assert all(p["enabled"] and p["toxics"] == [] for p in r.json()["proxies"])
    api.post("/proxies/redis/toxics", json={"type": "latency"})
    api.post("/proxies/postgres/toxics", json={"type": "latency"})

    wanted[1]["upstream"] = "127.0.0.1:3"
    r = api.post("/populate", json=wanted)
    assert r.status_code == 201
    by_name = {p["name"]: p for p in r.json()["proxies"]}
    assert len(by_name["redis"]["toxics"]) == 1  # unchanged: kept with its toxics
    assert by_name["postgres"]["toxics"] == []  # changed: replaced
    assert by_name["postgres"]["upstream"] == "127.0.0.1:3"


def test_populate_rejects_bad_input_without_changing_anything(api) -> None:
    r = api.post("/populate", json=[{"name": "ok", "upstream": "127.0.0.1:1"}, {"name": "bad"}])
    assert r.status_code == 400
    assert r.json()["error"] == "missing required field: upstream at proxy 2"
    assert api.get("/proxies").json() == {}
    assert api.post("/populate", json={"name": "x"}).status_code == 400


def test_reset_enables_all_and_removes_all_toxics(api) -> None:
    api.post("/proxies", json={"name": "a", "upstream": "127.0.0.1:1"})
    api.post("/proxies", json={"name": "b", "upstream": "127.0.0.1:1", "enabled": False})
    api.post("/proxies/a/toxics", json={"type": "latency"})
    api.post("/proxies/b/toxics", json={"type": "timeout"})
    assert api.post("/reset").status_code == 204
    proxies = api.get("/proxies").json()
    assert all(p["enabled"] and p["toxics"] == [] for p in proxies.values())
    assert _connectable(proxies["b"]["listen"])


def test_toxiproxy_python_client_works_unchanged(proxy_server, redis_server) -> None:
    from toxiproxy import Toxiproxy
    from toxiproxy.exceptions import NotFound, ProxyExists

    toxiproxy = Toxiproxy()
    toxiproxy.update_api_consumer(proxy_server.host, proxy_server.port)
    assert toxiproxy.running()
    assert b"version" in toxiproxy.version()

    proxy = toxiproxy.create(upstream=f"127.0.0.1:{redis_server.port}", name="redis")
    assert proxy.enabled and proxy.listen.startswith("127.0.0.1:")
    with pytest.raises(ProxyExists):
        toxiproxy.create(upstream=f"127.0.0.1:{redis_server.port}", name="redis")

    proxy.add_toxic(type="latency", attributes={"latency": 50})
    toxics = proxy.toxics()
    assert list(toxics) == ["latency_downstream"]
    assert toxics["latency_downstream"].attributes == {"latency": 50, "jitter": 0}
    assert proxy.destroy_toxic("latency_downstream")
    assert proxy.toxics() == {}
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")

    with proxy.down():
        assert not _connectable(proxy.listen)
    assert _connectable(proxy.listen)

    port = servers.free_port()
    created = toxiproxy.populate(
        [
            {
                "name": "extra",
                "listen": f"127.0.0.1:{port}",
                "upstream": f"127.0.0.1:{redis_server.port}",
            }
        ]
    )
    assert [p.name for p in created] == ["extra"]
    assert set(toxiproxy.proxies()) == {"redis", "extra"}

    proxy.add_toxic(type="timeout", stream="upstream")
    assert toxiproxy.reset()
    assert toxiproxy.get_proxy("redis").enabled and proxy.toxics() == {}

    toxiproxy.destroy_all()
    assert toxiproxy.proxies() == {}


def _start_cli(port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosmessaging.proxy",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_loads_config_and_stops_cleanly_on_sigterm(tmp_path, redis_server) -> None:
    api_port, listen_port = servers.free_port(), servers.free_port()
    config = tmp_path / "proxies.json"
    config.write_text(
        json.dumps(
            [
                {
                    "name": "redis",
                    "listen": f"127.0.0.1:{listen_port}",
                    "upstream": f"127.0.0.1:{redis_server.port}",
                }
            ]
        )
    )
    proc = _start_cli(api_port, "--config", str(config))
    try:
        servers.wait_for_port("127.0.0.1", api_port, timeout=15, proc=proc, what="fault proxy")
        proxies = httpx.get(f"http://127.0.0.1:{api_port}/proxies").json()
        assert proxies["redis"]["listen"] == f"127.0.0.1:{listen_port}"
        with socket.create_connection(("127.0.0.1", listen_port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(64) == b"+PONG\r\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not _connectable(f"127.0.0.1:{listen_port}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_reports_a_taken_port_and_exits_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        proc = _start_cli(holder.getsockname()[1])
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 2
    assert "cannot listen" in err and "--port" in err

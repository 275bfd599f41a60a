"""Docker actions against a fake engine (no Docker engine can run here) and an unreachable one.

The fake speaks just the Engine API endpoints the SDK uses for these actions, over loopback HTTP,
and keeps container state in memory so the tests can check what each action did.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import faults
from chaosmessaging.actions import docker as docker_actions
from chaosmessaging.stack.servers import free_port


class _Engine:
    def __init__(self) -> None:
        self.containers = {
            "c1": {"name": "consumer-1", "status": "running", "labels": {"svc": "consumer"}},
            "c2": {"name": "consumer-2", "status": "running", "labels": {"svc": "consumer"}},
            "a1": {"name": "api", "status": "running", "labels": {"svc": "api"}},
        }
        self.calls: list[tuple[str, str, dict]] = []

    def find(self, ref: str) -> str | None:
        for cid, c in self.containers.items():
            if ref in (cid, c["name"]):
                return cid
        return None

    def inspect(self, cid: str) -> dict:
        c = self.containers[cid]
        return {
            "Id": cid,
            "Name": "/" + c["name"],
            "State": {
                "Status": c["status"],
                "Running": c["status"] == "running",
                "Paused": c["status"] == "paused",
            },
            "Config": {"Labels": c["labels"], "Image": "x"},
            "Image": "sha256:x",
        }


def _handler(engine: _Engine):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, body=None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            path = re.sub(r"^/v[\d.]+", "", url.path)
            if path == "/version":
                return self._send(200, {"ApiVersion": "1.45", "Version": "fake"})
            if path == "/_ping":
                return self._send(200, "OK")
            if path == "/containers/json":
                query = parse_qs(url.query)
                wanted = json.loads(query.get("filters", ["{}"])[0]).get("label", [])
                found = [
                    {"Id": cid, "Names": ["/" + c["name"]]}
                    for cid, c in engine.containers.items()
                    if all(f"{k}={v}" in wanted for k, v in c["labels"].items() if wanted)
                ]
                return self._send(200, found)
            m = re.fullmatch(r"/containers/([^/]+)/json", path)
            if m:
                cid = engine.find(m[1])
                if cid is None:
                    return self._send(404, {"message": f"No such container: {m[1]}"})
                return self._send(200, engine.inspect(cid))
            self._send(404, {"message": f"fake engine does not serve {path}"})

        def do_POST(self):
            url = urlparse(self.path)
            path = re.sub(r"^/v[\d.]+", "", url.path)
            m = re.fullmatch(r"/containers/([^/]+)/(kill|stop|start|restart|pause|unpause)", path)
            if not m or engine.find(m[1]) is None:
                return self._send(404, {"message": "No such container"})
            cid, verb = engine.find(m[1]), m[2]
            engine.calls.append((verb, engine.containers[cid]["name"], parse_qs(url.query)))
            new = {
                "kill": "exited",
                "stop": "exited",
                "start": "running",
                "restart": "running",
                "pause": "paused",
                "unpause": "running",
            }[verb]
            engine.containers[cid]["status"] = new
            self._send(204)

    return Handler


@pytest.fixture
def fake_docker(monkeypatch, tmp_path):
    engine = _Engine()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(engine))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path / "home"))
    yield engine
    server.shutdown()
    server.server_close()


def test_fake_docker_kill_by_name_records_fault_and_revert_starts_it(fake_docker):
    out = docker_actions.kill_container(name="api", signal="SIGTERM")
    assert out == {"containers": ["api"], "action": "kill", "signal": "SIGTERM"}
    assert fake_docker.calls == [("kill", "api", {"signal": ["SIGTERM"]})]
    assert fake_docker.containers["a1"]["status"] == "exited"
    [fault] = faults.active()
    assert (fault.kind, fault.target) == ("container_stopped", "container:api")

    [result] = faults.revert_all()
    assert result["status"] == "reverted"
    assert fake_docker.containers["a1"]["status"] == "running"
    assert faults.active() == []


def test_fake_docker_pause_then_unpause_clears_the_fault(fake_docker):
    docker_actions.pause_container(name="consumer-1")
    assert fake_docker.containers["c1"]["status"] == "paused"
    assert [f.kind for f in faults.active()] == ["container_paused"]
    docker_actions.unpause_container(name="consumer-1")
    assert fake_docker.containers["c1"]["status"] == "running"
    assert faults.active() == []


def test_fake_docker_label_over_max_containers_is_refused(fake_docker):
    with pytest.raises(
        ActivityFailed, match="2 containers carry 'svc=consumer' but max_containers is 1"
    ):
        docker_actions.stop_container(label="svc=consumer")
    assert fake_docker.calls == []
    out = docker_actions.stop_container(label="svc=consumer", max_containers=2, timeout=3)
    assert sorted(out["containers"]) == ["consumer-1", "consumer-2"]
    assert {c[2]["t"][0] for c in fake_docker.calls} == {"3"}
    docker_actions.restart_container(label="svc=consumer", max_containers=2)
    assert faults.active() == []


def test_fake_docker_unknown_container_is_an_actionable_error(fake_docker):
    with pytest.raises(ActivityFailed, match="no container named 'nope'"):
        docker_actions.kill_container(name="nope")


def test_unreachable_engine_says_how_to_fix(monkeypatch, tmp_path):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    with pytest.raises(ActivityFailed) as err:
        docker_actions.pause_container(name="x", docker_host=f"tcp://127.0.0.1:{port}")
    message = str(err.value)
    assert f"cannot reach the Docker engine (DOCKER_HOST=tcp://127.0.0.1:{port})" in message
    assert "point DOCKER_HOST" in message
    assert faults.active(tmp_path) == []

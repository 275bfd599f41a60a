"""Alerts through apprise: a real apprise `json://` delivery to an HTTP receiver on loopback, from
the nightly alerts and from a plain `chaos run` with `chaosmessaging.controls.alerts`; the URLs
(secrets) never reach a log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chaosmessaging.nightly import alerts

pytest.importorskip("apprise", reason="apprise comes with the [alerts] extra (in [nightly])")

CHAOS = str(Path(sys.executable).with_name("chaos"))
TOKEN = "s3cr3t-t0ken-in-the-url"


@pytest.fixture
def receiver():
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(500 if "broken" in self.path else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port, received
    server.shutdown()
    server.server_close()


def test_a_nightly_alert_reaches_a_generic_webhook_through_apprise(receiver, caplog):
    port, received = receiver
    env = {"CHAOSMESSAGING_ALERT_URLS": f"json://127.0.0.1:{port}/hook/{TOKEN}"}
    targets = alerts.channels(env)
    assert [c.kind for c in targets] == ["apprise"] and TOKEN not in repr(targets)
    suite = {
        "night": "2026-12-06",
        "profile": "smoke",
        "exit_code": 1,
        "experiments": [
            {
                "name": "message_soak",
                "plan_test": "T1",
                "critical": True,
                "blocking": True,
                "status": "failed",
                "duration_s": 60,
                "reason": "p95 142 ms over the 100 ms limit",
            }
        ],
    }
    text = alerts.critical_failures(suite)
    with caplog.at_level(logging.DEBUG):
        assert alerts.send(text, targets) == {"sent": 1, "failed": []}
    ((path, payload),) = received
    assert path == f"/hook/{TOKEN}"
    assert "critical test failure" in payload["title"]
    assert "p95 142 ms over the 100 ms limit" in payload["message"]
    assert TOKEN not in caplog.text


def test_a_failed_or_unknown_apprise_url_is_named_without_its_secret(receiver, caplog):
    port, _ = receiver
    targets = alerts.urls_to_channels(
        f"json://127.0.0.1:{port}/broken/{TOKEN}\nnosuchscheme://{TOKEN}@example"
    )
    with caplog.at_level(logging.DEBUG):
        result = alerts.send("hello\nworld", targets)
    assert result["sent"] == 0 and len(result["failed"]) == 2, result
    assert "apprise URL #1 (json://)" in result["failed"][0]
    assert "apprise URL #2 (nosuchscheme://)" in result["failed"][1]
    assert TOKEN not in caplog.text and TOKEN not in json.dumps(result)


PROBES = """
from pathlib import Path


def p95(marker):
    slow = Path(marker).exists()
    return {"ok": not slow, "p95_ms": 142 if slow else 12,
            "reason": "p95 142 ms over the 100 ms limit" if slow else "p95 12 ms within 100 ms"}


def slow_down(marker, really):
    if really:
        Path(marker).write_text("slow")
"""


def _experiment(tmp_path: Path, deviates: bool) -> Path:
    (tmp_path / "alertprobe.py").write_text(PROBES)
    marker = str(tmp_path / "slow")
    experiment = {
        "version": "1.0.0",
        "title": "alerting run",
        "description": "a run that deviates or holds on purpose",
        "secrets": {"alerts": {"alert_urls": {"type": "env", "key": "MY_ALERT_URLS"}}},
        "controls": [
            {
                "name": "alerts",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.controls.alerts",
                    "secrets": ["alerts"],
                },
            }
        ],
        "steady-state-hypothesis": {
            "title": "fast enough",
            "probes": [
                {
                    "type": "probe",
                    "name": "p95-within-limit",
                    "tolerance": {"type": "jsonpath", "path": "$.ok", "expect": True},
                    "provider": {
                        "type": "python",
                        "module": "alertprobe",
                        "func": "p95",
                        "arguments": {"marker": marker},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "slow-down",
                "provider": {
                    "type": "python",
                    "module": "alertprobe",
                    "func": "slow_down",
                    "arguments": {"marker": marker, "really": deviates},
                },
            }
        ],
    }
    path = tmp_path / "alerting.json"
    path.write_text(json.dumps(experiment))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["deviated", "completed"])
def test_a_plain_chaos_run_alerts_on_deviation_only(receiver, tmp_path, outcome):
    port, received = receiver
    experiment = _experiment(tmp_path, deviates=outcome == "deviated")
    env = {**os.environ, "MY_ALERT_URLS": f"json://127.0.0.1:{port}/run/{TOKEN}"}
    env["PYTHONPATH"] = str(tmp_path)
    env["CHAOSMESSAGING_HOME"] = str(tmp_path / "home")
    log = tmp_path / "chaos.log"
    done = subprocess.run(
        [
            CHAOS,
            "--log-file",
            str(log),
            "run",
            "--journal-path",
            str(tmp_path / "j.json"),
            str(experiment),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    journal = json.loads((tmp_path / "j.json").read_text())
    output = done.stdout + done.stderr
    assert TOKEN not in output and TOKEN not in log.read_text()
    assert TOKEN not in json.dumps(journal)
    if outcome == "completed":
        assert done.returncode == 0 and not journal["deviated"], output
        assert received == []
        return
    assert journal["deviated"], output
    ((path, payload),) = received
    assert path == f"/run/{TOKEN}"
    assert payload["title"] == ":rotating_light: chaos run deviated: alerting run"
    assert "p95-within-limit: p95 142 ms over the 100 ms limit" in payload["message"], payload
    assert "alert channel(s) reached" in log.read_text()

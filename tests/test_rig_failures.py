"""A failure of the rig is never reported as a weakness of the system (issue 18.3, 18.4, 18.6).

A run ends one of four ways: completed, deviated, configuration error (exit 1, nothing started),
rig failure (exit `EXIT_RIG_FAILURE`, the method stopped before the next fault, every fault
reverted). The chaos runs here are short and need no stack: a real k6 that dies at once, a real
HTTP server that refuses the load-test login, the real `chaos` CLI.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chaosmessaging import faults, rig
from chaosmessaging.actions.load import _resolve_script
from chaosmessaging.controls import rig as rig_control
from chaosmessaging.controls import validation
from chaosmessaging.stack.servers import free_port

CHAOS = str(Path(sys.executable).with_name("chaos"))
SUPPORT = Path(__file__).resolve().parent / "support"


class _Auth(http.server.BaseHTTPRequestHandler):
    """An auth service that refuses every login (wrong load-test password)."""

    def do_POST(self):  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "invalid credentials"}'
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_auth():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Auth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _experiment(tmp_path: Path, script: str, marker: Path, auth: str) -> Path:
    api = f"http://127.0.0.1:{free_port()}"
    experiment = {
        "version": "1.0.0",
        "title": "the rig fails, the system is not blamed",
        "description": "a load that dies at once, then an action that must never run",
        "configuration": {
            "chaosmessaging_home": str(tmp_path / "home"),
            "messaging_api_url": api,
            "messaging_auth_url": auth,
            "load_rate": 5,
        },
        "controls": [
            {
                "name": "chaosmessaging",
                "provider": {"type": "python", "module": "chaosmessaging.controls.standard"},
            }
        ],
        "steady-state-hypothesis": {"title": "nothing to check", "probes": []},
        "method": [
            {
                "type": "action",
                "name": "start-load",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.actions.load",
                    "func": "start_load",
                    "arguments": {"script": script, "rate": "${load_rate}", "duration": "20s"},
                },
                "pauses": {"after": 3},
            },
            {
                "type": "action",
                "name": "inject-the-fault",
                "provider": {
                    "type": "process",
                    "path": "touch",
                    "arguments": str(marker),
                },
            },
        ],
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    return path


def _chaos(tmp_path: Path, experiment: Path, *extra: str) -> tuple[int, dict, str]:
    journal = tmp_path / "journal.json"
    journal.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(SUPPORT)}
    for name in ("CHAOSMESSAGING_HOME", "CHAOSMESSAGING_RUN_ID", "CHAOSMESSAGING_API_URL"):
        env.pop(name, None)
    proc = subprocess.run(
        [CHAOS, "run", "--journal-path", str(journal), *extra, str(experiment)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    doc = json.loads(journal.read_text()) if journal.exists() else {}
    return proc.returncode, doc, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_load_that_dies_ends_the_run_as_a_rig_failure_before_the_next_fault(tmp_path):
    """k6 dies at once (a script error); the next action (the fault) never runs; exit 3."""
    (tmp_path / "broken.js").write_text('throw new Error("this script is broken");\n')
    marker = tmp_path / "fault-injected"
    experiment = _experiment(tmp_path, "broken.js", marker, f"http://127.0.0.1:{free_port()}")
    code, journal, out = _chaos(tmp_path, experiment)
    assert code == rig.EXIT_RIG_FAILURE, out
    assert journal["status"] == "failed" and journal["deviated"] is False, out
    failure = journal["chaosmessaging_rig_failure"]
    assert "broken.js" in failure["failures"][0] and "exit code" in failure["failures"][0]
    assert "chaosmessaging_configuration_error" not in journal
    assert not marker.exists(), "the method went on to the next fault"
    assert faults.active(tmp_path / "home") == []
    assert "rig failure" in out


@pytest.mark.slow
def test_a_var_file_that_is_not_json_and_an_unknown_var_are_configuration_errors(tmp_path):
    (tmp_path / "broken.js").write_text('throw new Error("never started");\n')
    marker = tmp_path / "fault-injected"
    experiment = _experiment(tmp_path, "broken.js", marker, f"http://127.0.0.1:{free_port()}")
    bad = tmp_path / "night.json"
    bad.write_text('{"configuration": {"load_rate": 50,}}')  # a trailing comma
    for extra, words in (
        (["--var-file", str(bad)], f"--var-file {bad} cannot be read as JSON"),
        (["--var", "load_rat:int=50"], "did you mean 'load_rate'?"),
    ):
        code, journal, out = _chaos(tmp_path, experiment, *extra)
        assert code == 1, out
        errors = journal["chaosmessaging_configuration_error"]["errors"]
        assert any(words in e for e in errors), (errors, out)
        assert journal["deviated"] is False
        assert not marker.exists()
        assert not list((tmp_path / "home").glob("load/**/*.log")), "a load was started"


def test_a_refused_load_test_login_is_a_rig_failure_before_the_steady_state(
    refusing_auth, tmp_path
):
    path = _experiment(tmp_path, "message_load.js", tmp_path / "m", "")
    experiment = json.loads(path.read_text())
    configuration = {**experiment["configuration"], "messaging_auth_url": refusing_auth}
    with pytest.raises(SystemExit) as stopped:
        rig_control.before_experiment_control(experiment, configuration)
    assert stopped.value.code == rig_control.EXIT_WITHOUT_ROLLBACKS
    assert "refused" in rig.failures()[0] and "HTTP 401" in rig.failures()[0]
    assert "CHAOSMESSAGING_LOADTEST_PASSWORD" in rig.failures()[0]
    journal: dict = {}
    rig_control.after_experiment_control(experiment, journal, configuration)
    assert journal["deviated"] is False and journal["status"] == "failed"
    assert journal["chaosmessaging_rig_failure"]["failures"] == rig.failures()
    rig.reset()


def test_preflight_checks_values_against_each_activitys_limits(tmp_path):
    path = _experiment(tmp_path, "message_load.js", tmp_path / "m", "")
    experiment = json.loads(path.read_text())
    load = experiment["method"][0]["provider"]["arguments"]
    load.update(duration="3h", rate=50000, script="no/such/dir/message_load.js")
    experiment["method"][1] = {
        "type": "action",
        "name": "latency",
        "provider": {
            "type": "python",
            "module": "chaosmessaging.actions.toxiproxy",
            "func": "add_latency",
            "arguments": {"proxy": "redis", "latency_ms": 10, "stream": "both"},
        },
    }
    errors = validation.configuration_errors(experiment, experiment["configuration"])
    text = "\n".join(errors)
    assert "k6 script 'no/such/dir/message_load.js' not found" in text
    assert "stream 'both' must be 'upstream' or 'downstream'" in text
    assert "rate 50000/s exceeds max_rate" in text
    fleet = {
        "type": "action",
        "name": "fleet",
        "provider": {
            "type": "python",
            "module": "chaosmessaging.actions.websocket",
            "func": "start_clients",
            "arguments": {"users": 50, "devices_per_user": 200},
        },
    }
    experiment["method"] = [fleet]
    errors = validation.configuration_errors(experiment, experiment["configuration"])
    assert any("over the fleet's cap of 5000" in e for e in errors), errors


def test_scripts_resolve_beside_the_experiment_and_never_fall_back(tmp_path):
    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    (project / "k6").mkdir()
    (project / "k6" / "message_load.js").write_text("// edited copy\n")
    # a bare name finds the edited copy beside the experiment, not the shipped script
    found = _resolve_script("message_load.js", base=project / "experiments")
    assert found == (project / "k6" / "message_load.js").resolve()
    # an explicit path in a folder that does not exist is an error, never the shipped script
    with pytest.raises(Exception, match="not found"):
        _resolve_script("scripts/message_load.js", base=project / "experiments")


def test_chaos_run_arguments_reads_the_command_line():
    argv = ["/v/bin/chaos", "--log-file", "x.log", "run", "--var", "a:int=1"]
    argv += ["--var-file", __file__]
    parsed = rig.chaos_run_arguments([*argv, "e.json"])
    assert parsed["source"] == "e.json" and parsed["var"] == {"a": 1}
    assert list(parsed["var_file"]) == [__file__]
    assert rig.chaos_run_arguments(["pytest", "run", "e.json"]) is None


def test_loadtest_users_that_is_not_a_number_is_named_by_its_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CHAOSMESSAGING_LOADTEST_USERS", "abc")
    errors = validation.setting_errors({})
    assert errors and "from environment CHAOSMESSAGING_LOADTEST_USERS" in errors[0]
    proc = subprocess.run(
        [sys.executable, "-m", "chaosmessaging.cli", "--home", str(tmp_path / "h"), "stack", "up"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHAOSMESSAGING_LOADTEST_USERS": "abc"},
    )
    assert proc.returncode == 1 and "CHAOSMESSAGING_LOADTEST_USERS='abc'" in proc.stdout
    assert "--count" not in proc.stdout + proc.stderr
    assert not (tmp_path / "h" / "stack.json").exists()


@pytest.mark.parametrize(
    "code,log,rig_failed",
    [
        (0, "", False),
        (99, "thresholds on metrics 'http_req_failed' have been crossed", False),
        (107, "Error: login as loadtest-0 failed: HTTP 401", True),
        (107, "ReferenceError: fooo is not defined at file:///k6/message_load.js:12", True),
        (107, "Error: login as loadtest-0 failed: HTTP 503", False),  # the system failed it
        (107, "request failed: dial tcp 127.0.0.1:8081: connect: connection refused", False),
    ],
)
def test_a_k6_failure_is_the_rigs_only_when_the_system_did_not_cause_it(code, log, rig_failed):
    from chaosmessaging.actions.load import is_rig_failure

    assert is_rig_failure(code, log) is rig_failed

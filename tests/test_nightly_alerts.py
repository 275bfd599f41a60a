"""Alerts reach Slack- and Discord-compatible webhooks (a real HTTP receiver on loopback), and
the webhook URLs, which are secrets, never show in logs."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaosmessaging.clients import alerts as client_alerts
from chaosmessaging.nightly import alerts
from chaosmessaging.nightly.regressions import detect


@pytest.fixture
def receiver():
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            code = 500 if self.path.startswith("/broken") else 204
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()


SUITE = {
    "night": "2026-11-25",
    "profile": "nightly",
    "exit_code": 1,
    "experiments": [
        {
            "name": "message_soak",
            "plan_test": "T1",
            "critical": True,
            "blocking": True,
            "status": "failed",
            "duration_s": 1800,
            "reason": "criteria not met: p95",
        },
        {
            "name": "redis_partition",
            "plan_test": "T9",
            "critical": False,
            "blocking": False,
            "status": "passed",
            "duration_s": 600,
            "reason": "",
        },
    ],
}


def test_critical_failures_and_the_daily_summary_reach_slack_and_discord(receiver, caplog):
    base, received = receiver
    env = {
        "CHAOSMESSAGING_SLACK_WEBHOOK": f"{base}/slack/T000/B000/secret-token",
        "CHAOSMESSAGING_DISCORD_WEBHOOK": f"{base}/discord/123/secret-token",
    }
    targets = alerts.channels(env)
    assert [c.kind for c in targets] == ["slack", "discord"]
    text = alerts.critical_failures(SUITE, "https://ci.example/run/1")
    assert "message_soak" in text and "redis_partition" not in text
    with caplog.at_level(logging.DEBUG):
        assert alerts.send(text, targets) == {"sent": 2, "failed": []}
        summary = alerts.daily_summary(SUITE, [])
        alerts.send(summary, targets)
    paths = [p for p, _ in received]
    assert paths == ["/slack/T000/B000/secret-token", "/discord/123/secret-token"] * 2
    assert received[0][1] == {"text": text}  # Slack incoming-webhook shape
    assert received[1][1] == {"content": text}  # Discord webhook shape
    assert "1/2 experiments passed" in received[2][1]["text"]
    assert "secret-token" not in caplog.text and "secret-token" not in repr(targets)


def test_a_failed_delivery_is_reported_without_the_url(receiver, caplog):
    base, _ = receiver
    targets = [
        alerts.Channel("slack", f"{base}/broken/secret-token"),
        alerts.Channel("discord", "http://127.0.0.1:9/secret-token"),
    ]  # nothing listens
    with caplog.at_level(logging.WARNING):
        result = alerts.send("hello", targets, timeout=2)
    assert result["sent"] == 0
    assert result["failed"][0] == "slack webhook #1: HTTP 500"
    assert result["failed"][1].startswith("discord webhook #2: ")
    assert "secret-token" not in caplog.text and "secret-token" not in str(result)


def test_regression_and_weekly_reports_name_the_shift(receiver):
    base, received = receiver
    nights = [f"2026-11-{d:02d}" for d in range(1, 31)]
    findings = [
        detect("message_soak.soak.p95_ms", [40.0] * 27 + [46.0] * 3, nights),
        detect("message_soak.soak.throughput_rps", [500.0] * 30, nights),
    ]
    text = alerts.regressions(findings, nights[-1])
    assert "since 2026-11-28" in text and "throughput" not in text
    assert alerts.regressions(findings[1:], nights[-1]) is None
    weekly = alerts.weekly_report(findings, nights)
    assert "REGRESSION" in weekly and "30 nights" in weekly
    alerts.send(weekly, [alerts.Channel("discord", f"{base}/discord/1/x")])
    assert received[-1][1]["content"] == weekly


def test_a_long_discord_message_is_cut_to_its_limit():
    payload = alerts.Channel("discord", "http://127.0.0.1/x").payload("x" * 5000)
    assert len(payload["content"]) == client_alerts.DISCORD_LIMIT

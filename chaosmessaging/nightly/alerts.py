"""Alerts to any notification service apprise knows, and to Slack/Discord-style webhooks.

Messages: critical failures (the plan's tests 1, 4, 8, 11 — `catalog.CRITICAL`), regressions,
a daily summary and a weekly trend report (Sundays); `chaosmessaging.controls.alerts` sends one
from a plain `chaos run` too.

Where they go: `CHAOSMESSAGING_ALERT_URLS`, apprise URLs separated by commas or whitespace
(https://github.com/caronc/apprise/wiki: ``slack://T/B/token``, ``discord://id/token``,
``msteams://...``, ``mailtos://user:pass@host?to=...``, ``pagerduty://...``, a generic webhook
``json://host/path`` or ``jsons://`` for HTTPS, and dozens more), delivered by apprise (the
``[alerts]`` extra, part of ``[nightly]``). The two older variables keep working as they did:
`CHAOSMESSAGING_SLACK_WEBHOOK` and `CHAOSMESSAGING_DISCORD_WEBHOOK` hold plain incoming-webhook
URLs posted as the services' own one-field JSON (Slack ``{"text"}``, Discord ``{"content"}``,
which Mattermost, Rocket.Chat and similar accept) with httpx, so any host (a relay, a receiver on
loopback) works.

Every URL is a secret (tokens, passwords): it comes from the environment or a Chaos Toolkit
secret, and is never logged or written anywhere. A failed delivery is reported by channel kind
and index (and an apprise URL by its scheme); the errors' texts, which could quote the URL, are
dropped; httpx's, httpcore's, urllib3's and apprise's own loggers stay quiet while alerts are
sent.
"""

from __future__ import annotations

from chaosmessaging.clients.alerts import ENV, Channel, channels, send, urls_to_channels

__all__ = [
    "Channel",
    "channels",
    "send",
    "critical_failures",
    "daily_summary",
    "regressions",
    "weekly_report",
    "ENV",
    "urls_to_channels",
]


def _link(url: str | None) -> str:
    return f"\n{url}" if url else ""


def critical_failures(suite: dict, dashboard_url: str | None = None) -> str | None:
    """The alert for failed critical experiments, or None when they all passed."""
    bad = [
        e
        for e in suite["experiments"]
        if e.get("critical") and e["status"] not in ("passed", "not run")
    ]
    if not bad:
        return None
    lines = [
        f":rotating_light: Nightly {suite['night']} ({suite['profile']}): critical test "
        f"{'failure' if len(bad) == 1 else 'failures'}"
    ]
    lines += [
        f"• {e['name']} ({e.get('plan_test') or '-'}): {e['status']} — "
        f"{e.get('reason') or 'see the journal'}"
        for e in bad
    ]
    return "\n".join(lines) + _link(dashboard_url)


def regressions(findings: list, night: str, dashboard_url: str | None = None) -> str | None:
    bad = [f for f in findings if f.regressed]
    if not bad:
        return None
    return "\n".join(
        [f":chart_with_upwards_trend: Nightly {night}: performance regression"]
        + [f"• {f.reason}" for f in bad]
    ) + _link(dashboard_url)


def daily_summary(suite: dict, findings: list, dashboard_url: str | None = None) -> str:
    exps = suite["experiments"]
    passed = sum(e["status"] == "passed" for e in exps)
    verdict = "passed" if suite.get("exit_code") == 0 else "FAILED"
    lines = [
        f"Nightly {suite['night']} ({suite['profile']}): {verdict} — {passed}/{len(exps)} "
        "experiments passed"
    ]
    for e in exps:
        mark = "✅" if e["status"] == "passed" else ("⚠️" if not e["blocking"] else "❌")
        lines.append(f"{mark} {e['name']}: {e['status']} ({e.get('duration_s') or 0:.0f}s)")
    n_reg = sum(f.regressed for f in findings)
    lines.append(f"regressions: {n_reg}" if n_reg else "no regression")
    return "\n".join(lines) + _link(dashboard_url)


def weekly_report(findings: list, nights: list[str], dashboard_url: str | None = None) -> str:
    lines = [
        f"Weekly trend report ({nights[0] if nights else '?'} … "
        f"{nights[-1] if nights else '?'}, {len(nights)} nights)"
    ]
    moved = sorted(
        (f for f in findings if f.vs_last7_pct is not None), key=lambda f: -abs(f.vs_last7_pct)
    )[:10]
    lines += [
        f"• {f.metric}: {f.vs_last7_pct:+.1f}% vs the last 7 nights"
        + (" — REGRESSION" if f.regressed else "")
        for f in moved
    ]
    return "\n".join(lines) + _link(dashboard_url)

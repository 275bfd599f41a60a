"""Alert delivery: any notification service apprise knows, and Slack/Discord-style webhooks.

Where alerts go: `CHAOSMESSAGING_ALERT_URLS`, apprise URLs separated by commas or whitespace
(https://github.com/caronc/apprise/wiki: ``slack://T/B/token``, ``discord://id/token``,
``msteams://...``, ``mailtos://user:pass@host?to=...``, ``pagerduty://...``, a generic webhook
``json://host/path`` or ``jsons://`` for HTTPS, and dozens more), delivered by apprise (the
``[alerts]`` extra, part of ``[nightly]``). The two older variables keep working as they did:
`CHAOSMESSAGING_SLACK_WEBHOOK` and `CHAOSMESSAGING_DISCORD_WEBHOOK` hold plain incoming-webhook
URLs posted as the services' own one-field JSON (Slack ``{"text"}``, Discord ``{"content"}``) with
httpx, so any host (a relay, a receiver on loopback) works.

Every URL is a secret (tokens, passwords): it comes from the environment or a Chaos Toolkit
secret, and is never logged or written anywhere. A failed delivery is reported by channel kind
and index (and an apprise URL by its scheme); the errors' texts, which could quote the URL, are
dropped; httpx's, httpcore's, urllib3's and apprise's own loggers stay quiet while alerts are
sent. Shared by the nightly suite's messages (`chaosmessaging.nightly.alerts`) and the control
that alerts from a plain `chaos run` (`chaosmessaging.controls.alerts`).
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from logzero import logger

__all__ = ["Channel", "ENV", "channels", "send", "urls_to_channels"]

ENV = {
    "apprise": "CHAOSMESSAGING_ALERT_URLS",
    "slack": "CHAOSMESSAGING_SLACK_WEBHOOK",
    "discord": "CHAOSMESSAGING_DISCORD_WEBHOOK",
}
#: apprise URLs may be separated by whitespace too (a multi-line secret)
_SEPARATORS = {"apprise": r"[,\s]+", "slack": ",", "discord": ","}
DISCORD_LIMIT = 2000


@dataclass(frozen=True)
class Channel:
    kind: str  # apprise | slack | discord
    url: str

    def __repr__(self) -> str:  # never show the URL
        return f"Channel({self.kind})"

    def payload(self, text: str) -> dict:
        if self.kind == "discord":
            return {
                "content": text if len(text) <= DISCORD_LIMIT else text[: DISCORD_LIMIT - 1] + "…"
            }
        return {"text": text}


def channels(environ: dict | None = None) -> list[Channel]:
    """The webhooks configured in the environment (none: alerts are skipped)."""
    environ = os.environ if environ is None else environ
    found = []
    for kind, name in ENV.items():
        found += urls_to_channels(environ.get(name) or "", kind)
    return found


def urls_to_channels(urls: str | list[str], kind: str = "apprise") -> list[Channel]:
    """Channels of one kind from a separated string (or a list) of URLs."""
    if isinstance(urls, str):
        urls = re.split(_SEPARATORS[kind], urls)
    return [Channel(kind, u.strip()) for u in urls if u and u.strip()]


def send(text: str, targets: list[Channel] | None = None, timeout: float = 10.0) -> dict:
    """Post `text` to every channel; returns ``{"sent": n, "failed": [descriptions]}``."""
    targets = channels() if targets is None else targets
    sent, failed = 0, []
    with _quiet_http_logs():
        for index, channel in enumerate(targets, 1):
            problem = _post(index, channel, text, timeout)
            if problem:
                failed.append(problem)
            else:
                sent += 1
    for item in failed:
        logger.warning(f"alert not delivered: {item}")
    return {"sent": sent, "failed": failed}


@contextmanager
def _quiet_http_logs():
    """httpx logs every request's full URL at INFO (and httpcore its connection at DEBUG): the
    webhook's token would land in the log, so they stay at WARNING while alerts are sent."""
    # apprise posts with requests: urllib3 logs each request's path (the token) at DEBUG
    quiet = [logging.getLogger(n) for n in ("httpx", "httpcore", "apprise", "urllib3")]
    levels = [q.level for q in quiet]
    for q in quiet:
        # apprise logs a failed delivery's error at WARNING/ERROR, which may quote its host/path
        q.setLevel(logging.CRITICAL if q.name == "apprise" else logging.WARNING)
    try:
        yield
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _notify(index: int, channel: Channel, text: str) -> str | None:
    """Deliver through apprise; None when delivered, else what went wrong (never the URL)."""
    scheme = channel.url.split("://", 1)[0] if "://" in channel.url else "?"
    where = f"apprise URL #{index} ({scheme}://)"
    try:
        import apprise
    except ModuleNotFoundError:
        return (
            f"{where}: apprise is not installed; install it with "
            "`pip install 'chaosmessaging[alerts]'`"
        )
    sender = apprise.Apprise()
    if not sender.add(channel.url):
        return f"{where}: not a URL apprise knows (check its scheme and form)"
    title, _, body = text.partition("\n")
    ok = sender.notify(body=body or title, title=title if body else "")
    return None if ok else f"{where}: the service did not accept it"


def _post(index: int, channel: Channel, text: str, timeout: float) -> str | None:
    """Post once; None when delivered, else what went wrong (never the URL)."""
    if channel.kind == "apprise":
        return _notify(index, channel, text)
    where = f"{channel.kind} webhook #{index}"
    try:
        response = httpx.post(channel.url, json=channel.payload(text), timeout=timeout)
    except httpx.HTTPError as error:
        return f"{where}: {type(error).__name__}"  # str(error) would quote the URL
    return f"{where}: HTTP {response.status_code}" if response.status_code >= 300 else None

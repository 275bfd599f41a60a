"""Readiness checks for the embedded stack's processes (used after start and restart)."""

from __future__ import annotations

import subprocess

import httpx

from chaosmessaging.stack.servers import ServerError, postgres_bin_dir, wait_for_port
from chaosmessaging.stack.state import ATTEMPT_MARK, ServiceRecord
from chaosmessaging.util import http, poll, tail

__all__ = ["wait_healthy", "is_healthy", "wait_ready"]


def is_healthy(record: ServiceRecord) -> bool:
    """One quick check of `record` according to its `health` kind."""
    if not record.alive():
        return False
    if record.health == "postgres":
        cmd = [
            str(postgres_bin_dir() / "pg_isready"),
            "-h",
            record.host,
            "-p",
            str(record.port),
            "-U",
            "postgres",
            "-q",
            "-t",
            "1",
        ]
        return subprocess.run(cmd).returncode == 0
    if record.health.startswith("/"):
        try:
            url = f"http://{record.host}:{record.port}{record.health}"
            return http().get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False
    try:
        wait_for_port(record.host, record.port, timeout=0.5)
        return True
    except ServerError:
        return False


def wait_healthy(record: ServiceRecord, timeout: float = 30.0) -> None:
    """Poll until `record` is healthy; raise ServerError with its log tail if it dies or hangs."""
    if poll(lambda: is_healthy(record) or not record.alive(), timeout) and is_healthy(record):
        return
    state = "exited" if not record.alive() else f"not healthy within {timeout:.0f}s"
    raise _failed(record, state)


def _failed(record: ServiceRecord, state: str) -> ServerError:
    """`record` did not come up (`state`), with the lines its log holds of this attempt."""
    # only this attempt's lines (spawn writes the marker): an old failure must not pass for this one
    lines = tail(record.log, after=ATTEMPT_MARK) or "(nothing logged yet)"
    return ServerError(f"service {record.name} {state} (log {record.log}):\n  {lines}")


def wait_ready(record: ServiceRecord, timeout: float = 60.0) -> None:
    """Poll the service's readiness path (e.g. /readyz) until it answers 200.

    Alive (/healthz) is not enough before an experiment: a service that has not connected to
    PostgreSQL or Redis yet would fail the first steady-state probe. A service that exits while
    it waits (killed, crashed) fails at once, with its log tail."""
    if record.ready is None:
        return
    last = "no answer"
    url = f"http://{record.host}:{record.port}{record.ready}"

    def ready() -> bool:
        nonlocal last
        try:
            answer = http().get(url, timeout=2.0)
        except httpx.HTTPError as error:
            last = str(error)
            return False
        last = f"{answer.status_code} {answer.text[:200]}"
        return answer.status_code == 200

    # a service killed or crashed while it starts will not become ready: say so at once
    watched = record.pid is not None or record.backend == "docker"
    gone = False

    def settled() -> bool:
        nonlocal gone
        if ready():
            return True
        if watched:  # gone: docker says it stopped, or no process of ours holds the pid
            gone = (
                not record.alive()
                if record.backend == "docker"
                else record.identity() == (None, None)
            )
        return gone

    if poll(settled, timeout, 0.2) and not gone:
        return
    if gone:
        raise _failed(record, "exited while starting")
    raise ServerError(f"service {record.name} not ready within {timeout:.0f}s: {last}")

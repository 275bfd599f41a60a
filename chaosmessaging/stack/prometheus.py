"""A private Prometheus server (Debian's `prometheus` package) scraping services on loopback.

Used by the tests of `metrics_source: prometheus` and by `chaosmessaging stack up --prometheus`.
The binary is `prometheus` on PATH or `CHAOSMESSAGING_PROMETHEUS_BIN`; there is no PyPI wheel of
the server, so a machine without it gets a `ServerError` that says how to install it. Every server
started here has its own configuration file, data directory and port; nothing here touches a
Prometheus it did not start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from chaosmessaging.stack.servers import ServerError
from chaosmessaging.util import http

__all__ = [
    "BIN_ENV",
    "prometheus_binary",
    "write_config",
    "prometheus_command",
    "start_prometheus",
    "wait_ready",
    "wait_scraped",
]

BIN_ENV = "CHAOSMESSAGING_PROMETHEUS_BIN"


def prometheus_binary() -> str:
    """The Prometheus server binary, or `ServerError` saying how to get one."""
    found = os.environ.get(BIN_ENV) or shutil.which("prometheus")
    if not found or not os.access(found, os.X_OK):
        raise ServerError(
            "no prometheus binary: install Debian's package (apt-get install prometheus) or set "
            f"{BIN_ENV} to a Prometheus 2.x server binary"
        )
    return found


def write_config(path: Path, jobs: dict[str, list[str]], interval_s: float = 1.0) -> Path:
    """Write a scrape configuration: one job per service (`{"api": ["127.0.0.1:8080", ...]}`),
    every target scraped every `interval_s` at `/metrics`. JSON is YAML, so no YAML writer."""
    interval = f"{max(1, round(interval_s * 1000))}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(addresses)}],
            }
            for job, addresses in jobs.items()
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def prometheus_command(config: Path, data_dir: Path, port: int, host: str = "127.0.0.1") -> list:
    return [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={host}:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Wait until `<url>/-/ready` answers 200 (or `proc` exits: `ServerError`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"prometheus exited with code {proc.returncode} while starting")
        try:
            if http().get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServerError(f"prometheus at {url} was not ready within {timeout:g} s")


def wait_scraped(
    url: str, targets: int, proc: subprocess.Popen | None = None, timeout: float = 30.0
) -> None:
    """Wait until Prometheus has scraped each of its `targets` once (it discovers static targets
    a few seconds after it is ready), so a first PromQL read sees every replica."""
    deadline = time.monotonic() + timeout
    seen: list = []
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"prometheus exited with code {proc.returncode}")
        try:
            seen = http().get(f"{url}/api/v1/targets", timeout=2.0).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError):
            seen = []
        if len(seen) >= targets and all(t.get("health") != "unknown" for t in seen):
            return
        time.sleep(0.2)
    raise ServerError(
        f"prometheus at {url} scraped {len(seen)} of {targets} targets within {timeout:g} s"
    )


def start_prometheus(
    home: Path, port: int, jobs: dict[str, list[str]], interval_s: float = 1.0
) -> subprocess.Popen:
    """Start a private Prometheus in `home` (config, data, log) on loopback `port`, scraping
    `jobs`, and wait until it is ready. The caller stops it (SIGTERM to the process group)."""
    home.mkdir(parents=True, exist_ok=True)
    config = write_config(home / "prometheus.json", jobs, interval_s)
    log = open(home / "prometheus.log", "ab")
    proc = subprocess.Popen(
        prometheus_command(config, home / "data", port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        wait_scraped(f"http://127.0.0.1:{port}", sum(len(a) for a in jobs.values()), proc)
    except ServerError:
        proc.kill()
        proc.wait()
        raise
    return proc

"""Shared fixtures: private Redis and PostgreSQL servers on free loopback ports.

Each session gets its own servers in a temporary directory; they are stopped at the end. Tests
never touch the machine's standard 5432/6379 servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaosmessaging.stack import servers
from chaosmessaging.stack.control import spawn
from chaosmessaging.stack.state import ServiceRecord, StackState, load_state, save_state


@dataclass
class Server:
    host: str
    port: int
    proc: subprocess.Popen
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[Server]:
    port = servers.free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = servers.start_redis(port, data)
    yield Server("127.0.0.1", port, proc, data)
    _stop(proc)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> Iterator[Server]:
    port = servers.free_port()
    data = tmp_path_factory.mktemp("pg") / "data"
    proc = servers.start_postgres(port, data)
    yield Server("127.0.0.1", port, proc, data)
    _stop(proc, signal.SIGINT)


@pytest.fixture
def one_service_stack(tmp_path) -> Iterator[Path]:
    """A stack home (tmp_path/"home") whose stack.json holds one real process, an HTTP server,
    recorded as the service 'consumer'. Yields the home; kills whatever runs there at the end."""
    home = tmp_path / "home"
    port = servers.free_port()
    record = ServiceRecord(name="consumer", pid=None, host="127.0.0.1", port=port,
                           address=f"http://127.0.0.1:{port}",
                           cmd=[sys.executable, "-m", "http.server", str(port), "--bind",
                                "127.0.0.1"], log=str(home / "logs" / "consumer.log"))
    spawn(record)
    save_state(StackState(home=str(home), started_at=time.time(), services={"consumer": record}))
    yield home
    current = load_state(home).services["consumer"]
    if current.alive():
        os.killpg(current.pid, signal.SIGKILL)

"""Shared fixtures: private Redis and PostgreSQL servers on free loopback ports.

Each session gets its own servers in a temporary directory; they are stopped at the end. Tests
never touch the machine's standard 5432/6379 servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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


def _server_dir(prefix: str) -> Path:
    """A directory for data PostgreSQL (running as its own system user when we are root) must
    reach: outside /tmp/pytest-of-<user>, which every pytest session starting on the machine
    resets to 0700, cutting a running server off its files."""
    return Path(tempfile.mkdtemp(prefix=f"chaosmessaging-{prefix}-"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    port = servers.free_port()
    root = _server_dir("pg")
    data = root / "data"
    proc = servers.start_postgres(port, data)
    yield Server("127.0.0.1", port, proc, data)
    _stop(proc, signal.SIGINT)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def one_service_stack(tmp_path) -> Iterator[Path]:
    """A stack home (tmp_path/"home") whose stack.json holds one real process, an HTTP server,
    recorded as the service 'consumer'. Yields the home; kills whatever runs there at the end."""
    home = tmp_path / "home"
    port = servers.free_port()
    record = ServiceRecord(
        name="consumer",
        pid=None,
        host="127.0.0.1",
        port=port,
        address=f"http://127.0.0.1:{port}",
        cmd=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        log=str(home / "logs" / "consumer.log"),
    )
    spawn(record)
    save_state(StackState(home=str(home), started_at=time.time(), services={"consumer": record}))
    yield home
    current = load_state(home).services["consumer"]
    if current.alive():
        os.killpg(current.pid, signal.SIGKILL)


CHAOS = str(Path(sys.executable).with_name("chaos"))
SUPPORT = Path(__file__).resolve().parent / "support"


@pytest.fixture(scope="session")
def embedded_stack():
    """One private embedded stack (Redis, PostgreSQL, fault proxy, services) for the session's
    experiment runs; each run tags its own messages, so runs do not see each other's."""
    from chaosmessaging.stack import launcher

    home = _server_dir("stack")
    state = launcher.up(home, proxy_port=servers.free_port())
    yield state
    launcher.down(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_run_id_leaks():
    """In-process tests start runs (`runs.new_run` exports CHAOSMESSAGING_RUN_ID): without this,
    a later `chaos` child of the same worker would inherit a finished run whose method already
    started, and its verdicts would skip the "holds before the method" rule."""
    os.environ.pop("CHAOSMESSAGING_RUN_ID", None)
    yield
    os.environ.pop("CHAOSMESSAGING_RUN_ID", None)


def chaos_env(stack) -> dict:
    """Environment of a `chaos` process aimed at `stack` (test-only activities importable)."""
    env = {**os.environ, "CHAOSMESSAGING_HOME": stack.home, "PYTHONPATH": str(SUPPORT)}
    env.pop("CHAOSMESSAGING_RUN_ID", None)
    return env


@pytest.fixture
def chaos_run(embedded_stack, tmp_path):
    """Run the real `chaos run` on an experiment against the session's embedded stack:
    `chaos_run(path, *extra_args, timeout=300)` -> (exit code, journal, output)."""

    def run(experiment: Path, *extra: str, timeout: float = 300) -> tuple[int, dict, str]:
        journal = tmp_path / "journal.json"
        proc = subprocess.run(
            [
                CHAOS,
                "--log-file",
                str(tmp_path / "chaos.log"),
                "run",
                "--journal-path",
                str(journal),
                *extra,
                str(experiment),
            ],
            env=chaos_env(embedded_stack),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
        )
        return proc.returncode, json.loads(journal.read_text()), proc.stdout + proc.stderr

    return run

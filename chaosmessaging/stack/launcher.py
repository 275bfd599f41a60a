"""The embedded stack: private Redis, PostgreSQL, the fault proxy and the reference services.

`up()` starts everything on loopback ports of its own (never the machine's 5432/6379), routes the
services' Redis and PostgreSQL traffic through the Toxiproxy-compatible fault proxy, applies the
migrations, waits until each process is healthy and records it all in `<home>/stack.json`.
`down()` stops exactly the processes recorded there, plus any process marked as started from this
home that the file does not list (see `control.owned_processes`): a Ctrl-C between a start and the
write of its pid, or a corrupt state file, must not leave an orphan holding PostgreSQL's lock file.
This module is the only place that knows the reference stack (`msgstack`), and only as commands
to run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chaosmessaging.config import lookup
from chaosmessaging.stack import servers
from chaosmessaging.stack.control import spawn, stop_owned, stop_service
from chaosmessaging.stack.health import wait_healthy, wait_ready
from chaosmessaging.stack.state import (
    ATTEMPT_MARK,
    ServiceRecord,
    StackNotRunning,
    StackState,
    StackStateError,
    home_lock,
    load_state,
    save_state,
    stack_home,
    state_path,
    usable_home,
)
from chaosmessaging.util import tail

__all__ = ["up", "preflight", "down", "ensure_up", "status", "StackError", "SERVICE_ORDER"]

HOST = "127.0.0.1"
DATABASE = "messaging"
SERVICE_ORDER = ["redis", "postgres", "proxy", "auth", "api", "dispatcher", "consumer", "gateway"]
APP_SERVICES = ["auth", "api", "dispatcher", "consumer", "gateway"]
DEFAULT_PROXY_PORT = 8474  # Toxiproxy's default, when free
SEED_PASSWORD_ENV = "MSGSTACK_SEED_PASSWORD"


class StackError(RuntimeError):
    """The embedded stack could not be started; everything it had started is stopped again."""


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def _redis_url(port: int) -> str:
    return f"redis://{HOST}:{port}/0"


def _pg_dsn(port: int, user: str = "postgres") -> str:
    return f"postgresql://{user}@{HOST}:{port}/{DATABASE}"


# The database role each reference service connects as (created by msgstack's migration 0004):
# never the tables' owner nor BYPASSRLS, so row-level security governs every query they make.
# Migrations (and the extension's own probes, through the postgres record) use the owner.
SERVICE_DB_ROLES = {
    "auth": "msgstack_auth",
    "api": "msgstack_api",
    "dispatcher": "msgstack_pipeline",
    "consumer": "msgstack_pipeline",
    "gateway": "msgstack_gateway",
}


def _plan(
    home: Path, with_proxy: bool, proxy_port: int | None, env: dict[str, str] | None = None
) -> dict[str, ServiceRecord]:
    """Decide ports, commands and environments for every process (`env`: extra variables of the
    reference services, kept in their records so a restart gets them too)."""
    logs, data = home / "logs", home / "data"
    port = {name: servers.free_port(HOST) for name in SERVICE_ORDER}
    if proxy_port is None:
        proxy_port = DEFAULT_PROXY_PORT if _port_free(DEFAULT_PROXY_PORT) else port["proxy"]
    port["proxy"] = proxy_port
    redis_port, pg_port = port["redis"], port["postgres"]
    if with_proxy:
        redis_port, pg_port = servers.free_port(HOST), servers.free_port(HOST)
    records = {
        "redis": ServiceRecord(
            name="redis",
            pid=None,
            host=HOST,
            port=port["redis"],
            address=_redis_url(redis_port),
            direct_address=_redis_url(port["redis"]),
            cmd=servers.redis_command(port["redis"], data / "redis", HOST),
            log=str(logs / "redis.log"),
            health="tcp",
        ),
        "postgres": ServiceRecord(
            name="postgres",
            pid=None,
            host=HOST,
            port=port["postgres"],
            address=_pg_dsn(pg_port),
            direct_address=_pg_dsn(port["postgres"]),
            cmd=servers.postgres_command(port["postgres"], data / "postgres", HOST),
            log=str(logs / "postgres.log"),
            user=servers.pg_user(),
            health="postgres",
        ),
    }
    if with_proxy:
        proxies = [
            {
                "name": "redis",
                "listen": f"{HOST}:{redis_port}",
                "upstream": f"{HOST}:{port['redis']}",
                "enabled": True,
            },
            {
                "name": "postgres",
                "listen": f"{HOST}:{pg_port}",
                "upstream": f"{HOST}:{port['postgres']}",
                "enabled": True,
            },
        ]
        config = home / "proxy.json"
        config.write_text(json.dumps(proxies, indent=2))
        records["proxy"] = ServiceRecord(
            name="proxy",
            pid=None,
            host=HOST,
            port=proxy_port,
            address=f"http://{HOST}:{proxy_port}",
            cmd=[
                sys.executable,
                "-m",
                "chaosmessaging.proxy",
                "--host",
                HOST,
                "--port",
                str(proxy_port),
                "--config",
                str(config),
            ],
            log=str(logs / "proxy.log"),
            health="/version",
        )
    common = {
        "MSGSTACK_PG_DSN": records["postgres"].address,
        "MSGSTACK_REDIS_URL": records["redis"].address,
        "MSGSTACK_HOST": HOST,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    for name in APP_SERVICES:
        service_env = {**common, "MSGSTACK_PORT": str(port[name])}
        if name in SERVICE_DB_ROLES:
            service_env["MSGSTACK_PG_DSN"] = _pg_dsn(pg_port, SERVICE_DB_ROLES[name])
        if name == "api":  # two worker processes: participant invalidation must cross processes
            service_env.setdefault("MSGSTACK_API_WORKERS", "2")
        records[name] = ServiceRecord(
            name=name,
            pid=None,
            host=HOST,
            port=port[name],
            address=f"http://{HOST}:{port[name]}",
            cmd=[sys.executable, "-m", "msgstack", name],
            env=service_env,
            log=str(logs / f"{name}.log"),
            health="/healthz",
            ready="/readyz",
        )
    return records


def _migrate(env: dict[str, str], log: Path) -> None:
    servers.mark_attempt(log, "migrations")
    with open(log, "ab") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "msgstack", "migrate"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    if proc.returncode != 0:
        raise StackError(
            f"migrations failed (exit {proc.returncode}), see {log}:\n  "
            f"{tail(log, after=ATTEMPT_MARK)}"
        )


def check_port(port: int | None, what: str = "--proxy-port") -> None:
    """Refuse a port outside 1-65535 or one already taken on loopback, before anything starts."""
    if port is None:
        return
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise StackError(
            f"{what} {port!r} is not a TCP port: give a number from 1 to 65535 (or "
            "leave it out to pick a free one)"
        )
    if not _port_free(port):
        raise StackError(
            f"{what} {port}: port {port} on {HOST} is already in use; choose "
            "another (or leave it out to pick a free one)"
        )


def _check_binaries() -> None:
    try:
        servers.redis_server_binary()
        servers.postgres_bin_dir()
    except servers.ServerError as exc:
        raise StackError(str(exc)) from None


def preflight(
    home: str | os.PathLike | None = None, with_proxy: bool = True, proxy_port: int | None = None
) -> Path:
    """Check what a fresh `up` needs before anything is created or started (the proxy port, the
    server binaries, then the home, created here); return the home. Raises StackError/HomeError."""
    if with_proxy:
        check_port(proxy_port)
    _check_binaries()
    return usable_home(home)


def _seed_users(env: dict[str, str], log: Path) -> None:
    """Create the load-test users experiments log in as (`messaging_loadtest_*` keys).

    The password reaches the seed command through its environment only: it is not in the
    command line, in stack.json or in any log.
    """
    count = str(lookup("messaging_loadtest_users"))
    prefix = str(lookup("messaging_loadtest_prefix"))
    password = str(lookup("messaging_loadtest_password"))
    servers.mark_attempt(log, "seeding users")
    with open(log, "ab") as out:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "msgstack",
                "seed-users",
                "--count",
                count,
                "--prefix",
                prefix,
                "--password-env",
                SEED_PASSWORD_ENV,
            ],
            env={**os.environ, **env, SEED_PASSWORD_ENV: password},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    if proc.returncode != 0:
        raise StackError(
            f"seeding users failed (exit {proc.returncode}), see {log}:\n  "
            f"{tail(log, after=ATTEMPT_MARK)}"
        )


def up(
    home: str | os.PathLike | None = None,
    with_proxy: bool = True,
    proxy_port: int | None = None,
    progress: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    docker: bool = False,
    docker_host: str | None = None,
) -> StackState:
    """Start the whole embedded stack and return its state (already running → returned as is).

    `docker`: run the reference services as containers on the Docker Engine at `docker_host`
    (None: DOCKER_HOST or the default socket), from the image `stack.images` builds offline;
    Redis, PostgreSQL and the fault proxy stay local processes (see `stack.containers`).

    Holds the home's lock throughout, so a second `up` on the same home waits and then finds
    this one's stack running. `env` adds variables to the reference services' environment (e.g.
    `MSGSTACK_MUTANT` for `chaosmessaging selfcheck`, `MSGSTACK_RECLAIM_IDLE_MS`); they stay in
    the state file so a service restarted by an experiment gets them again."""
    _check_binaries()
    root = usable_home(home)
    with home_lock(root):
        try:
            existing = load_state(root)
        except StackNotRunning:
            existing = None
        say = progress or (lambda _msg: None)
        alive = existing is not None and any(r.alive() for r in existing.services.values())
        if alive and not existing.starting:
            say("already running (another start finished first): using it")
            return ensure_up(root, progress=progress)
        if alive:  # we hold the lock, so whoever was starting it is gone
            say("an interrupted start left processes running: stopping them first")
            _stop_all(existing)
        if with_proxy:
            check_port(proxy_port)
        image = _image(docker_host, say) if docker else None
        return _start(root, with_proxy, proxy_port, say, env, image, docker_host)


def _image(docker_host: str | None, say: Callable[[str], None]) -> str:
    """The reference stack's image on the engine (built offline when missing: minutes)."""
    from chaosmessaging.backends.docker import docker_client
    from chaosmessaging.stack import images

    say("preparing the reference stack's container image (built offline when missing)")
    try:
        tag, timings = images.app_image(docker_client(docker_host))
    except images.ImageError as exc:
        raise StackError(str(exc)) from None
    say(f"image {tag} ({', '.join(f'{k} {v:g}' for k, v in timings.items())})")
    return tag


def _start(
    root: Path,
    with_proxy: bool,
    proxy_port: int | None,
    say: Callable[[str], None],
    env: dict[str, str] | None = None,
    image: str | None = None,
    docker_host: str | None = None,
) -> StackState:
    state_path(root).unlink(missing_ok=True)
    leftovers = stop_owned(root)
    if leftovers:
        say(
            f"stopped {len(leftovers)} process(es) started from this home but not listed in "
            "stack.json (an interrupted start?): " + ", ".join(leftovers)
        )
    state = StackState(home=str(root), started_at=time.time(), services={}, starting=True)
    try:
        (root / "logs").mkdir(parents=True, exist_ok=True)
        (root / "data" / "redis").mkdir(parents=True, exist_ok=True)
        records = _plan(root, with_proxy, proxy_port, env)
        save_state(state)  # from here on, `stack down` knows this home holds a stack
        servers.init_postgres(root / "data" / "postgres")
        for name in SERVICE_ORDER:
            if name not in records:
                continue
            if name == APP_SERVICES[0]:
                servers.create_database(HOST, records["postgres"].port, DATABASE)
                say("applying migrations")
                owner = {**records[name].env, "MSGSTACK_PG_DSN": records["postgres"].address}
                _migrate(owner, root / "logs" / "migrate.log")
                say("seeding load-test users")
                _seed_users(owner, root / "logs" / "seed.log")
            # recorded (without a pid) before it starts, and again with its pid right after;
            # in between, the OWNER_ENV mark in its environment is how `down` finds it
            state.services[name] = records[name]
            save_state(state)
            if image is not None and name in APP_SERVICES:
                from chaosmessaging.stack import containers

                record = containers.run(records[name], image, root, docker_host)
                save_state(state)
                containers.wait_healthy(record, timeout=60)
                say(f"{name:<10} container {record.docker['container'][:12]} {record.address}")
                continue
            record = spawn(records[name], root)
            save_state(state)
            wait_healthy(record, timeout=60)
            say(f"{name:<10} pid {record.pid:<7} {record.address}")
        _wait_ready(state)
        state.starting = False
        save_state(state)
    except BaseException as exc:
        with _IgnoringInterrupts():
            say(
                "interrupted; stopping what was started"
                if isinstance(exc, KeyboardInterrupt)
                else "start failed; stopping what was started"
            )
            stopped = _stop_all(state) + stop_owned(root)
            if image is not None:
                from chaosmessaging.stack import containers

                stopped += containers.remove_owned(root, docker_host)
            say("stopped: " + (", ".join(stopped) if stopped else "nothing had started"))
            state_path(root).unlink(missing_ok=True)
        if isinstance(exc, servers.ServerError | StackError | OSError):
            detail = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror}: {exc}"
            raise StackError(detail) from exc
        raise
    return state


class _IgnoringInterrupts:
    """Ignore SIGINT/SIGTERM while cleaning up (a second Ctrl-C must not cut the clean-up short
    and leave orphans); restored afterwards. No-op outside the main thread."""

    def __enter__(self) -> None:
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, signal.SIG_IGN)

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _wait_ready(state: StackState) -> None:
    for record in state.services.values():
        wait_ready(record, timeout=60)


def ensure_up(
    home: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None
) -> StackState:
    """Return the running stack, restarting any recorded process that died; start it if absent."""
    from chaosmessaging.stack.control import start_service

    try:
        state = load_state(home)
    except StackNotRunning:
        return up(home, progress=progress)
    if state.starting:  # a start in progress (up waits for it) or an interrupted one (up redoes it)
        return up(home, progress=progress)
    for name in SERVICE_ORDER:
        if name in state.services and not state.services[name].alive():
            if progress:
                progress(f"{name} was not running: starting it")
            if state.services[name].backend == "docker":
                from chaosmessaging.stack import containers

                containers.start(state.services[name], timeout=60)
                continue
            start_service(name, state=state, timeout=60)
    _wait_ready(state)
    return state


def _stop_all(state: StackState) -> list[str]:
    stopped = []
    for name in reversed(SERVICE_ORDER):
        record = state.services.get(name)
        if record is not None and record.backend == "docker":
            from chaosmessaging.stack import containers

            if containers.remove(record):
                stopped.append(f"{name} (container)")
        elif record is not None and record.alive():
            stop_service(name, "SIGTERM", state=state, timeout=20)
            stopped.append(name)
    return stopped


def down(home: str | os.PathLike | None = None, purge: bool = False) -> list[str]:
    """Stop every process the stack started (and nothing else); `purge` also deletes its data.

    Processes the state file does not list but that carry this home's mark (an interrupted start)
    are stopped too; a corrupt state file is set aside as `stack.json.corrupt` after that."""
    root = stack_home(home)
    if root.exists() and not root.is_dir():
        usable_home(root)  # raises HomeError naming the problem
    stopped: list[str] = []
    try:
        state = load_state(root)
    except StackNotRunning:
        pass
    except StackStateError:
        path = state_path(root)
        path.replace(path.with_name("stack.json.corrupt"))
    else:
        stopped = _stop_all(state)
        hosts = {(r.docker or {}).get("docker_host") for r in state.services.values() if r.docker}
        for host in hosts:
            from chaosmessaging.stack import containers

            stopped += [f"unrecorded container {c}" for c in containers.remove_owned(root, host)]
        state_path(root).unlink(missing_ok=True)
    stopped += [f"unrecorded {p}" for p in stop_owned(root)]
    if purge:
        shutil.rmtree(root / "data", ignore_errors=True)
    return stopped


def status(home: str | os.PathLike | None = None) -> list[dict]:
    """One entry per service: name, pid, address, alive."""
    state = load_state(home)
    return [
        {
            "name": r.name,
            "pid": r.pid,
            "address": r.address,
            "alive": r.alive(),
            "log": r.log,
            **({"container": r.docker.get("container")} if r.docker else {}),
        }
        for r in (state.services[n] for n in SERVICE_ORDER if n in state.services)
    ]

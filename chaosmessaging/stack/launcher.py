"""The embedded stack: private Redis, PostgreSQL, the fault proxy and the reference services.

`up()` starts everything on loopback ports of its own (never the machine's 5432/6379), routes the
services' Redis and PostgreSQL traffic through the Toxiproxy-compatible fault proxy, applies the
migrations, waits until each process is healthy and records it all in `<home>/stack.json`.
`down()` stops exactly the processes recorded there. This module is the only place that knows the
reference stack (`msgstack`), and only as commands to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chaosmessaging.config import lookup
from chaosmessaging.stack import servers
from chaosmessaging.stack.control import spawn, stop_service
from chaosmessaging.stack.health import wait_healthy, wait_ready
from chaosmessaging.stack.state import (
    ServiceRecord,
    StackNotRunning,
    StackState,
    load_state,
    save_state,
    stack_home,
    state_path,
)
from chaosmessaging.util import tail

__all__ = ["up", "down", "ensure_up", "status", "StackError", "SERVICE_ORDER"]

HOST = "127.0.0.1"
DATABASE = "messaging"
SERVICE_ORDER = ["redis", "postgres", "proxy", "auth", "api", "dispatcher", "consumer"]
APP_SERVICES = ["auth", "api", "dispatcher", "consumer"]
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
SERVICE_DB_ROLES = {"auth": "msgstack_auth", "api": "msgstack_api",
                    "dispatcher": "msgstack_pipeline",
                    "consumer": "msgstack_pipeline"}


def _plan(home: Path, with_proxy: bool, proxy_port: int | None) -> dict[str, ServiceRecord]:
    """Decide ports, commands and environments for every process."""
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
            name="redis", pid=None, host=HOST, port=port["redis"],
            address=_redis_url(redis_port), direct_address=_redis_url(port["redis"]),
            cmd=servers.redis_command(port["redis"], data / "redis", HOST),
            log=str(logs / "redis.log"), health="tcp"),
        "postgres": ServiceRecord(
            name="postgres", pid=None, host=HOST, port=port["postgres"],
            address=_pg_dsn(pg_port), direct_address=_pg_dsn(port["postgres"]),
            cmd=servers.postgres_command(port["postgres"], data / "postgres", HOST),
            log=str(logs / "postgres.log"), user=servers.pg_user(), health="postgres"),
    }
    if with_proxy:
        proxies = [
            {"name": "redis", "listen": f"{HOST}:{redis_port}",
             "upstream": f"{HOST}:{port['redis']}", "enabled": True},
            {"name": "postgres", "listen": f"{HOST}:{pg_port}",
             "upstream": f"{HOST}:{port['postgres']}", "enabled": True},
        ]
        config = home / "proxy.json"
        config.write_text(json.dumps(proxies, indent=2))
        records["proxy"] = ServiceRecord(
            name="proxy", pid=None, host=HOST, port=proxy_port,
            address=f"http://{HOST}:{proxy_port}",
            cmd=[sys.executable, "-m", "chaosmessaging.proxy", "--host", HOST, "--port",
                 str(proxy_port), "--config", str(config)],
            log=str(logs / "proxy.log"), health="/version")
    common = {
        "MSGSTACK_PG_DSN": records["postgres"].address,
        "MSGSTACK_REDIS_URL": records["redis"].address,
        "MSGSTACK_HOST": HOST,
        "PYTHONUNBUFFERED": "1",
    }
    for name in APP_SERVICES:
        env = {**common, "MSGSTACK_PORT": str(port[name])}
        if name in SERVICE_DB_ROLES:
            env["MSGSTACK_PG_DSN"] = _pg_dsn(pg_port, SERVICE_DB_ROLES[name])
        if name == "api":  # two worker processes: participant invalidation must cross processes
            env["MSGSTACK_API_WORKERS"] = "2"
        records[name] = ServiceRecord(
            name=name, pid=None, host=HOST, port=port[name],
            address=f"http://{HOST}:{port[name]}",
            cmd=[sys.executable, "-m", "msgstack", name],
            env=env,
            log=str(logs / f"{name}.log"), health="/healthz", ready="/readyz")
    return records


def _migrate(env: dict[str, str], log: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run([sys.executable, "-m", "msgstack", "migrate"],
                              env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                              timeout=120)
    if proc.returncode != 0:
        raise StackError(f"migrations failed (exit {proc.returncode}), see {log}:\n  {tail(log)}")


def _seed_users(env: dict[str, str], log: Path) -> None:
    """Create the load-test users experiments log in as (`messaging_loadtest_*` keys).

    The password reaches the seed command through its environment only: it is not in the
    command line, in stack.json or in any log.
    """
    count = str(lookup("messaging_loadtest_users"))
    prefix = str(lookup("messaging_loadtest_prefix"))
    password = str(lookup("messaging_loadtest_password"))
    with open(log, "ab") as out:
        proc = subprocess.run([sys.executable, "-m", "msgstack", "seed-users", "--count", count,
                               "--prefix", prefix, "--password-env", SEED_PASSWORD_ENV],
                              env={**os.environ, **env, SEED_PASSWORD_ENV: password},
                              stdout=out, stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode != 0:
        tail = "\n  ".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StackError(f"seeding users failed (exit {proc.returncode}), see {log}:\n  {tail}")


def up(home: str | os.PathLike | None = None, with_proxy: bool = True,
       proxy_port: int | None = None, progress: Callable[[str], None] | None = None) -> StackState:
    """Start the whole embedded stack and return its state (already running → returned as is)."""
    say = progress or (lambda _msg: None)
    root = stack_home(home)
    try:
        existing = load_state(root)
    except StackNotRunning:
        existing = None
    if existing is not None:
        if any(r.alive() for r in existing.services.values()):
            return ensure_up(root, progress=progress)
        state_path(root).unlink()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "data" / "redis").mkdir(parents=True, exist_ok=True)
    records = _plan(root, with_proxy, proxy_port)
    state = StackState(home=str(root), started_at=time.time(), services={})
    try:
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
            record = spawn(records[name])
            state.services[name] = record
            save_state(state)
            wait_healthy(record, timeout=60)
            say(f"{name:<10} pid {record.pid:<7} {record.address}")
        _wait_ready(state)
    except BaseException as exc:
        say("start failed; stopping what was started")
        _stop_all(state)
        state_path(root).unlink(missing_ok=True)
        if isinstance(exc, (servers.ServerError, StackError)):
            raise StackError(str(exc)) from exc
        raise
    return state


def _wait_ready(state: StackState) -> None:
    for record in state.services.values():
        wait_ready(record, timeout=60)


def ensure_up(home: str | os.PathLike | None = None,
              progress: Callable[[str], None] | None = None) -> StackState:
    """Return the running stack, restarting any recorded process that died; start it if absent."""
    from chaosmessaging.stack.control import start_service

    try:
        state = load_state(home)
    except StackNotRunning:
        return up(home, progress=progress)
    for name in SERVICE_ORDER:
        if name in state.services and not state.services[name].alive():
            if progress:
                progress(f"{name} was not running: starting it")
            start_service(name, state=state, timeout=60)
    _wait_ready(state)
    return state


def _stop_all(state: StackState) -> list[str]:
    stopped = []
    for name in reversed(SERVICE_ORDER):
        record = state.services.get(name)
        if record is not None and record.alive():
            stop_service(name, "SIGTERM", state=state, timeout=20)
            stopped.append(name)
    return stopped


def down(home: str | os.PathLike | None = None, purge: bool = False) -> list[str]:
    """Stop every process the stack started (and nothing else); `purge` also deletes its data."""
    root = stack_home(home)
    try:
        state = load_state(root)
    except StackNotRunning:
        stopped: list[str] = []
    else:
        stopped = _stop_all(state)
        state_path(root).unlink(missing_ok=True)
    if purge:
        shutil.rmtree(root / "data", ignore_errors=True)
    return stopped


def status(home: str | os.PathLike | None = None) -> list[dict]:
    """One entry per service: name, pid, address, alive."""
    state = load_state(home)
    return [{"name": r.name, "pid": r.pid, "address": r.address, "alive": r.alive(),
             "log": r.log} for r in (state.services[n] for n in SERVICE_ORDER
                                     if n in state.services)]

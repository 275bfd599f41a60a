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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chaosmessaging.stack import servers, synapse
from chaosmessaging.stack.control import NotOurProcess, spawn, stop_owned, stop_service
from chaosmessaging.stack.health import wait_healthy, wait_ready
from chaosmessaging.stack.state import (
    ATTEMPT_MARK,
    HOME_MARKER,
    LOADTEST_SETTINGS,
    ServiceRecord,
    StackNotRunning,
    StackState,
    StackStateError,
    home_lock,
    is_marked_home,
    load_state,
    mark_home,
    save_state,
    stack_home,
    state_path,
    usable_home,
)
from chaosmessaging.util import tail

__all__ = [
    "up",
    "preflight",
    "down",
    "down_report",
    "DownReport",
    "ensure_up",
    "status",
    "StackError",
    "SERVICE_ORDER",
    "Settings",
]

HOST = "127.0.0.1"
DATABASE = "messaging"
SERVICE_ORDER = ["redis", "postgres", "proxy", "auth", "api", "dispatcher", "consumer", "gateway"]
APP_SERVICES = ["auth", "api", "dispatcher", "consumer", "gateway"]
#: started only when asked (`stack up --prometheus`), after every other service
OPTIONAL_SERVICES = ["prometheus"]
#: Every service a stack may hold, in start order: the reference stack's, then Synapse (the
#: `matrix` platform runs PostgreSQL and Synapse only), then the optional ones.
ALL_SERVICES = [*SERVICE_ORDER, "synapse", *OPTIONAL_SERVICES]
_ORDER = ALL_SERVICES
PLATFORMS = ("reference", "matrix")
DEFAULT_PROXY_PORT = 8474  # Toxiproxy's default, when free
SEED_PASSWORD_ENV = "MSGSTACK_SEED_PASSWORD"


class StackError(RuntimeError):
    """The embedded stack could not be started; everything it had started is stopped again."""


@dataclass(frozen=True)
class Settings:
    """What the launcher is told rather than looks up: the load-test users it seeds. Callers
    build it (`from_environment` reads the variables of `LOADTEST_SETTINGS`); the launcher
    imports no configuration module."""

    loadtest_prefix: str = LOADTEST_SETTINGS["prefix"][1]
    loadtest_users: str = LOADTEST_SETTINGS["users"][1]
    loadtest_password: str = LOADTEST_SETTINGS["password"][1]

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        return cls(
            **{
                f"loadtest_{name}": environ.get(env) or default
                for name, (env, default) in LOADTEST_SETTINGS.items()
            }
        )


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


# The dependencies the fault proxy can stand in front of.
PROXIABLE = ("redis", "postgres")
ProxyChoice = bool | Iterable[str]


def proxied(with_proxy: ProxyChoice) -> tuple[str, ...]:
    """The dependencies whose traffic goes through the fault proxy: all of them (True), none
    (False) or those named (e.g. ``("redis",)``: a suite whose only network faults are on Redis
    relays PostgreSQL's traffic, most of the bytes, directly). Raises StackError on a name the
    proxy cannot front."""
    if with_proxy is True:
        return PROXIABLE
    if not with_proxy:
        return ()
    names = tuple(dict.fromkeys(str(n) for n in with_proxy))
    unknown = [n for n in names if n not in PROXIABLE]
    if unknown:
        raise StackError(
            f"the fault proxy cannot front {', '.join(map(repr, unknown))}: "
            f"name some of {', '.join(PROXIABLE)}"
        )
    return names


def _plan(
    home: Path,
    with_proxy: ProxyChoice,
    proxy_port: int | None,
    env: dict[str, str] | None = None,
    prometheus: bool = False,
) -> dict[str, ServiceRecord]:
    """Decide ports, commands and environments for every process (`env`: extra variables of the
    reference services, kept in their records so a restart gets them too)."""
    port = {name: servers.free_port(HOST) for name in _ORDER}
    if proxy_port is None:
        proxy_port = DEFAULT_PROXY_PORT if _port_free(DEFAULT_PROXY_PORT) else port["proxy"]
    port["proxy"] = proxy_port
    # what the services dial: the servers themselves, or the proxies in front of them
    fronted = proxied(with_proxy)
    dialled = {n: servers.free_port(HOST) if n in fronted else port[n] for n in PROXIABLE}
    records = _plan_servers(home, port, dialled)
    if fronted:
        records["proxy"] = _plan_proxy(home, port, dialled, fronted)
    records.update(_plan_services(home, port, records, dialled["postgres"], env))
    if prometheus:
        records["prometheus"] = _plan_prometheus(home, port)
    return records


def _plan_servers(home: Path, port: dict, dialled: dict) -> dict[str, ServiceRecord]:
    """Redis and PostgreSQL: each listens on its own port; `address` is what services dial."""
    logs, data = home / "logs", home / "data"
    return {
        "redis": ServiceRecord(
            name="redis",
            pid=None,
            host=HOST,
            port=port["redis"],
            address=_redis_url(dialled["redis"]),
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
            address=_pg_dsn(dialled["postgres"]),
            direct_address=_pg_dsn(port["postgres"]),
            cmd=servers.postgres_command(
                port["postgres"], data / "postgres", HOST, settings=_postgres_settings()
            ),
            log=str(logs / "postgres.log"),
            user=servers.pg_user(),
            health="postgres",
        ),
    }


def _postgres_settings() -> list[str]:
    """CHAOSMESSAGING_PG_SETTINGS, checked before anything starts (a configuration error)."""
    try:
        return servers.postgres_settings()
    except ValueError as exc:
        raise StackError(str(exc)) from None


def _plan_proxy(home: Path, port: dict, dialled: dict, fronted: tuple[str, ...]) -> ServiceRecord:
    """The fault proxy, with one proxy per `fronted` dependency (listen: what services dial)."""
    proxies = [
        {
            "name": name,
            "listen": f"{HOST}:{dialled[name]}",
            "upstream": f"{HOST}:{port[name]}",
            "enabled": True,
        }
        for name in fronted
    ]
    config = home / "proxy.json"
    config.write_text(json.dumps(proxies, indent=2))
    proxy_port = port["proxy"]
    return ServiceRecord(
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
        log=str(home / "logs" / "proxy.log"),
        health="/version",
    )


def _plan_services(
    home: Path, port: dict, records: dict, pg_port: int, env: dict[str, str] | None
) -> dict[str, ServiceRecord]:
    """The reference services (`python -m msgstack <name>`), each with its environment."""
    common = {
        "MSGSTACK_PG_DSN": records["postgres"].address,
        "MSGSTACK_REDIS_URL": records["redis"].address,
        "MSGSTACK_HOST": HOST,
        "PYTHONUNBUFFERED": "1",
        # an API process trusts a token it checked for up to 1 s (msgstack/tokens.py): a logout
        # or expiry takes effect within 1 s instead of at once, one Redis check per token per
        # second instead of one per request
        "MSGSTACK_AUTH_TOKEN_CACHE_MS": "1000",
        **(env or {}),
    }
    out = {}
    for name in APP_SERVICES:
        service_env = {**common, "MSGSTACK_PORT": str(port[name])}
        if name in SERVICE_DB_ROLES:
            service_env["MSGSTACK_PG_DSN"] = _pg_dsn(pg_port, SERVICE_DB_ROLES[name])
        if name == "api":  # two worker processes: participant invalidation must cross processes
            service_env.setdefault("MSGSTACK_API_WORKERS", "2")
        out[name] = ServiceRecord(
            name=name,
            pid=None,
            host=HOST,
            port=port[name],
            address=f"http://{HOST}:{port[name]}",
            cmd=[sys.executable, "-m", "msgstack", name],
            env=service_env,
            log=str(home / "logs" / f"{name}.log"),
            health="/healthz",
            ready="/readyz",
        )
    return out


def _plan_prometheus(home: Path, port: dict) -> ServiceRecord:
    """A private Prometheus scraping every reference service (job = service)."""
    from chaosmessaging.stack import prometheus as prom

    config = prom.write_config(
        home / "prometheus.json", {n: [f"{HOST}:{port[n]}"] for n in APP_SERVICES}
    )
    return ServiceRecord(
        name="prometheus",
        pid=None,
        host=HOST,
        port=port["prometheus"],
        address=f"http://{HOST}:{port['prometheus']}",
        cmd=prom.prometheus_command(config, home / "data" / "prometheus", port["prometheus"], HOST),
        log=str(home / "logs" / "prometheus.log"),
        health="/-/ready",
    )


def _plan_matrix(home: Path) -> dict[str, ServiceRecord]:
    """PostgreSQL (direct: no fault proxy) and Synapse on free loopback ports."""
    logs, data = home / "logs", home / "data"
    pg_port, port, metrics_port = (servers.free_port(HOST) for _ in range(3))
    config = synapse.write_config(home, port, metrics_port, HOST, pg_port)
    return {
        "postgres": ServiceRecord(
            name="postgres",
            pid=None,
            host=HOST,
            port=pg_port,
            address=_pg_dsn(pg_port),
            direct_address=_pg_dsn(pg_port),
            cmd=servers.postgres_command(
                pg_port, data / "postgres", HOST, settings=_postgres_settings()
            ),
            log=str(logs / "postgres.log"),
            user=servers.pg_user(),
            health="postgres",
        ),
        "synapse": synapse.synapse_record(
            home, HOST, port, metrics_port, config, logs / "synapse.log"
        ),
    }


def _register_matrix_users(record: ServiceRecord, home: Path, log: Path, settings: Settings) -> int:
    """Create `<prefix>-0 .. <prefix>-<users-1>` on Synapse with the load-test password (it
    travels in request bodies only: never a command line, stack.json or a log)."""
    count = int(settings.loadtest_users)
    prefix = str(settings.loadtest_prefix)
    password = str(settings.loadtest_password)
    servers.mark_attempt(log, "registering Matrix load-test users")
    try:
        made = synapse.register_users(
            record.address, home, [f"{prefix}-{i}" for i in range(count)], password
        )
    except (RuntimeError, httpx.HTTPError) as exc:
        raise StackError(f"registering the Matrix load-test users failed: {exc}") from None
    with open(log, "a") as out:
        out.write(f"{made} created, {count - made} already there ({prefix}-0..{count - 1})\n")
    return made


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
    home: str | os.PathLike | None = None,
    with_proxy: ProxyChoice = True,
    proxy_port: int | None = None,
    settings: Settings | None = None,
) -> Path:
    """Check what a fresh `up` needs before anything is created or started (the proxy port, the
    server binaries, then the home, created here); return the home. Raises StackError/HomeError."""
    if proxied(with_proxy):
        check_port(proxy_port)
    _check_binaries()
    _check_loadtest_users(settings or Settings.from_environment())
    return usable_home(home)


def _check_loadtest_users(settings: Settings) -> None:
    """The seeded users' count, named as the user set it, before anything starts."""
    users = str(settings.loadtest_users).strip()
    if not users.isdigit() or not 1 <= int(users) <= 100000:
        raise StackError(
            f"CHAOSMESSAGING_LOADTEST_USERS={users!r} must be a whole number of load-test "
            "users from 1 to 100000 (the users `stack up` seeds for k6 to log in as); nothing "
            "was started"
        )


def _seed_users(env: dict[str, str], log: Path, settings: Settings) -> None:
    """Create the load-test users experiments log in as (`messaging_loadtest_*` keys).

    The password reaches the seed command through its environment only: it is not in the
    command line, in stack.json or in any log.
    """
    count, prefix = str(settings.loadtest_users), str(settings.loadtest_prefix)
    password = str(settings.loadtest_password)
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
    with_proxy: ProxyChoice = True,
    proxy_port: int | None = None,
    progress: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    settings: Settings | None = None,
    docker: bool = False,
    docker_host: str | None = None,
    prometheus: bool = False,
    platform: str = "reference",
) -> StackState:
    """Start the whole embedded stack and return its state (already running → returned as is).

    `prometheus`: also start a private Prometheus (Debian's package) scraping every reference
    service every second (job = service name), recorded as the service `prometheus`, so
    `prometheus_url` resolves to it; `stack down` stops it with the rest.

    `docker`: run the reference services as containers on the Docker Engine at `docker_host`
    (None: DOCKER_HOST or the default socket), from the image `stack.images` builds offline;
    Redis, PostgreSQL and the fault proxy stay local processes (see `stack.containers`).

    `platform` "matrix" starts PostgreSQL and Matrix Synapse instead of the reference services
    (see `chaosmessaging.stack.synapse`).

    Holds the home's lock throughout, so a second `up` on the same home waits and then finds
    this one's stack running. `env` adds variables to the reference services' environment (e.g.
    `MSGSTACK_MUTANT` for `chaosmessaging selfcheck`, `MSGSTACK_RECLAIM_IDLE_MS`); they stay in
    the state file so a service restarted by an experiment gets them again. `settings`: the
    load-test users to seed (default `Settings.from_environment()`)."""
    settings = settings or Settings.from_environment()
    if platform not in PLATFORMS:
        raise StackError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")
    _check_binaries()
    if platform == "matrix":
        try:
            import synapse as _synapse  # noqa: F401
        except ImportError:
            raise StackError(
                "Matrix Synapse is not installed: pip install 'chaosmessaging[matrix]' "
                "(scripts/bootstrap installs it)"
            ) from None
    _check_loadtest_users(settings)
    root = usable_home(home)
    with home_lock(root):
        try:
            existing = load_state(root)
        except StackNotRunning:
            existing = None
        say = progress or (lambda _msg: None)
        alive = existing is not None and any(r.alive() for r in existing.services.values())
        if alive and not existing.starting:
            if existing.platform != platform:
                raise StackError(
                    f"a {existing.platform} stack already runs in {root}: stop it first "
                    "(`chaosmessaging stack down`) or use another --home"
                )
            say("already running (another start finished first): using it")
            return ensure_up(root, progress=progress)
        if alive:  # we hold the lock, so whoever was starting it is gone
            say("an interrupted start left processes running: stopping them first")
            _stop_all(existing)
        if proxied(with_proxy) and platform == "reference":
            check_port(proxy_port)
        image = _image(docker_host, say) if docker else None
        if prometheus:
            try:
                from chaosmessaging.stack.prometheus import prometheus_binary

                prometheus_binary()
            except servers.ServerError as exc:
                raise StackError(str(exc)) from None
        return _start(
            root,
            with_proxy,
            proxy_port,
            say,
            env,
            settings,
            image,
            docker_host,
            prometheus,
            platform,
        )


def _image(docker_host: str | None, say: Callable[[str], None]) -> str:
    """The reference stack's image on the engine (built offline when missing: minutes)."""
    from chaosmessaging.stack.containers import engine
    from chaosmessaging.stack import images

    say("preparing the reference stack's container image (built offline when missing)")
    try:
        tag, timings = images.app_image(engine(docker_host))
    except images.ImageError as exc:
        raise StackError(str(exc)) from None
    say(f"image {tag} ({', '.join(f'{k} {v:g}' for k, v in timings.items())})")
    return tag


def _start(
    root: Path,
    with_proxy: ProxyChoice,
    proxy_port: int | None,
    say: Callable[[str], None],
    env: dict[str, str] | None = None,
    settings: Settings | None = None,
    image: str | None = None,
    docker_host: str | None = None,
    prometheus: bool = False,
    platform: str = "reference",
) -> StackState:
    settings = settings or Settings.from_environment()
    state_path(root).unlink(missing_ok=True)
    mark_home(root)
    leftovers = stop_owned(root)
    if leftovers:
        say(
            f"stopped {len(leftovers)} process(es) started from this home but not listed in "
            "stack.json (an interrupted start?): " + ", ".join(leftovers)
        )
    state = StackState(
        home=str(root), started_at=time.time(), services={}, starting=True, platform=platform
    )
    try:
        (root / "logs").mkdir(parents=True, exist_ok=True)
        (root / "data" / "redis").mkdir(parents=True, exist_ok=True)
        if platform == "matrix":
            records = _plan_matrix(root)
        else:
            records = _plan(root, with_proxy, proxy_port, env, prometheus)
        save_state(state)  # from here on, `stack down` knows this home holds a stack
        servers.init_postgres(root / "data" / "postgres", owner=str(stack_home(root)))
        for name in ALL_SERVICES:
            if name not in records:
                continue
            if name == "synapse":
                servers.create_database(
                    HOST, records["postgres"].port, synapse.DATABASE, synapse.DATABASE_OPTIONS
                )
                say("generating Synapse's signing key")
                config = Path(records[name].cmd[-1])
                servers.mark_attempt(Path(records[name].log), "synapse --generate-keys")
                try:
                    synapse.generate_keys(config, Path(records[name].log))
                except RuntimeError as exc:
                    raise StackError(str(exc)) from None
            if name == APP_SERVICES[0]:
                servers.create_database(HOST, records["postgres"].port, DATABASE)
                say("applying migrations")
                owner = {**records[name].env, "MSGSTACK_PG_DSN": records["postgres"].address}
                _migrate(owner, root / "logs" / "migrate.log")
                say("seeding load-test users")
                _seed_users(owner, root / "logs" / "seed.log", settings)
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
            wait_healthy(record, timeout=120 if name == "synapse" else 60)
            say(f"{name:<10} pid {record.pid:<7} {record.address}")
            if name == "synapse":
                wait_ready(record, timeout=120)
                say("registering Matrix load-test users")
                _register_matrix_users(record, root, root / "logs" / "register.log", settings)
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
        return up(home, progress=progress, platform=state.platform)
    for name in ALL_SERVICES:
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


def _stop_all(state: StackState, refused: list[str] | None = None) -> list[str]:
    """Stop every recorded service that is provably ours; a record naming a live process that
    is not (no start time, another owner) is never signalled: its sentence goes to `refused`."""
    stopped = []
    for name in reversed(ALL_SERVICES):
        record = state.services.get(name)
        if record is None:
            continue
        if record.backend == "docker":
            from chaosmessaging.stack import containers

            if containers.remove(record):
                stopped.append(f"{name} (container)")
            continue
        proc, why = record.identity()
        if why:
            if refused is not None:
                refused.append(f"{name}: {why}")
            continue
        if proc is not None:
            try:
                stop_service(name, "SIGTERM", state=state, timeout=20)
                stopped.append(name)
            except NotOurProcess as exc:
                if refused is None:
                    raise
                refused.append(str(exc))
    return stopped


#: what `--purge` deletes: only what `stack up` creates in a home
PURGED = ("data/redis", "data/postgres", "proxy.json")


@dataclass
class DownReport:
    """What `down_report` really did."""

    stopped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # records not provably ours: not signalled
    deleted: list[str] = field(default_factory=list)
    purge_refused: str | None = None  # why --purge deleted nothing


def down(home: str | os.PathLike | None = None, purge: bool = False) -> list[str]:
    """Stop every process the stack started (and nothing else); `purge` also deletes its data
    (only in a home that carries our marker). Returns what was stopped; see `down_report`."""
    return down_report(home, purge).stopped


def down_report(home: str | os.PathLike | None = None, purge: bool = False) -> DownReport:
    """Stop every process the stack started, and nothing else; say what really happened.

    A recorded process is stopped only when its pid, start time and owner marker match; processes
    the state file does not list but that carry this home's owner marker (an interrupted start)
    are stopped too; a corrupt state file is set aside as `stack.json.corrupt` after that. With
    `purge`, what `stack up` created (`PURGED`) is deleted, only when the home carries the marker
    file `stack up` writes (`HOME_MARKER`): a folder that never held a stack is never touched."""
    root = stack_home(home)
    if root.exists() and not root.is_dir():
        usable_home(root)  # raises HomeError naming the problem
    report = DownReport()
    try:
        state = load_state(root)
    except StackNotRunning:
        pass
    except StackStateError:
        path = state_path(root)
        path.replace(path.with_name("stack.json.corrupt"))
    else:
        report.stopped = _stop_all(state, report.refused)
        hosts = {(r.docker or {}).get("docker_host") for r in state.services.values() if r.docker}
        for host in hosts:
            from chaosmessaging.stack import containers

            report.stopped += [
                f"unrecorded container {c}" for c in containers.remove_owned(root, host)
            ]
        if not report.refused:
            state_path(root).unlink(missing_ok=True)
    report.stopped += [f"unrecorded {p}" for p in stop_owned(root)]
    if purge:
        present = [name for name in PURGED if (root / name).exists()]
        if present and not is_marked_home(root):
            report.purge_refused = (
                f"{root} does not carry the marker file {HOME_MARKER} that `stack up` writes, so "
                f"it never held a stack started by chaosmessaging: nothing was deleted "
                f"(it holds {', '.join(present)}); check --home, or delete by hand"
            )
        elif present and report.refused:
            report.purge_refused = (
                "some recorded processes could not be proven ours and were not stopped: "
                "nothing was deleted"
            )
        else:
            for name in present:
                target = root / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
                report.deleted.append(str(target))
            data = root / "data"
            if data.is_dir() and not data.is_symlink() and not any(data.iterdir()):
                data.rmdir()
    return report


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
        for r in (state.services[n] for n in _ORDER if n in state.services)
    ]

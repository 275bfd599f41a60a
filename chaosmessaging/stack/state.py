"""The embedded stack's state file: which services run, where, under which pid.

One JSON file, `<home>/stack.json`, written by `chaosmessaging stack up` and read by anyone who
needs to find the running stack (a second shell, an experiment's configuration defaults, the
process actions). `<home>` is `$CHAOSMESSAGING_HOME`, else `.chaosmessaging/` in the current
directory. The file holds no secrets: the private servers use trust auth on loopback.

Shape::

    {"version": 1, "home": "/abs/.chaosmessaging", "started_at": 1732520000.0,
     "services": {"redis": {"name": "redis", "pid": 123, "host": "127.0.0.1", "port": 40001,
                            "address": "redis://127.0.0.1:40001/0", "cmd": [...], "env": {...},
                            "log": "/abs/.chaosmessaging/logs/redis.log", "user": null}, ...}}

`address` is what a client should use; for the services behind the fault proxy it is the proxied
address (`direct_address` then holds the server's own).

The file is written *before* each process is started (its record then has no pid yet) and again
as soon as the pid is known; every process the stack starts also carries `OWNER_ENV=<home>` in its
environment, so `stack down` finds a process whose pid never reached the file (Ctrl-C at the wrong
moment) or whose file is unreadable (see `chaosmessaging.stack.control.owned_processes`).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaosmessaging.util import OWNER_ENV, atomic_write_json, our_process, stack_home

__all__ = [
    "ATTEMPT_MARK",
    "HOME_MARKER",
    "LOADTEST_SETTINGS",
    "OWNER_ENV",
    "HomeError",
    "ServiceRecord",
    "StackNotRunning",
    "StackState",
    "StackStateError",
    "home_lock",
    "is_marked_home",
    "active_users",
    "register_user",
    "unregister_user",
    "mark_home",
    "load_state",
    "save_state",
    "stack_home",
    "usable_home",
]

#: The load-test users `stack up` seeds: setting -> (environment variable, default). The
#: embedded stack's password guards throwaway users on loopback only (documented in README.md);
#: `chaosmessaging.config` reads the same variables for the `messaging_loadtest_*` keys.
LOADTEST_SETTINGS = {
    "prefix": ("CHAOSMESSAGING_LOADTEST_PREFIX", "loadtest"),
    "users": ("CHAOSMESSAGING_LOADTEST_USERS", "50"),
    "password": ("CHAOSMESSAGING_LOADTEST_PASSWORD", "chaosmessaging-loadtest"),
}

#: Marker file written in a home when this toolkit creates it or starts a stack in it: `stack
#: down --purge` deletes data only in a directory that carries it.
HOME_MARKER = ".chaosmessaging-home"

#: First words of the line written to a service's log before each start (see `util.tail`'s
#: `after`): an error shows this attempt's lines, never a previous attempt's.
ATTEMPT_MARK = "=== chaosmessaging:"


class StackNotRunning(RuntimeError):
    """No embedded stack state was found where we looked."""


class StackStateError(RuntimeError):
    """`stack.json` exists but cannot be read as a stack state (the message names the file;
    `path` and `detail` say which and why)."""

    def __init__(self, message: str, path: Path, detail: str) -> None:
        super().__init__(message)
        self.path, self.detail = path, detail


class HomeError(RuntimeError):
    """The state directory cannot be used (a file, not creatable, not writable)."""


@contextmanager
def home_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the home directory itself (flock on its descriptor: no lock file
    to go stale; the kernel drops it when the holder dies), so two `stack up` never interleave."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def usable_home(
    home: str | os.PathLike | None = None, create: bool = True, write: bool = True
) -> Path:
    """The state directory, checked (created when `create`; writable when `write`), or
    HomeError saying what is wrong with it and how to fix it."""
    root = stack_home(home)
    hint = "pass another --home (or set CHAOSMESSAGING_HOME)"
    if root.exists() and not root.is_dir():
        raise HomeError(
            f"the state directory {root} is a file, not a directory: {hint}, or remove the file"
        )
    if not root.exists():
        if not create:
            return root
        try:
            root.mkdir(parents=True, exist_ok=True)
            mark_home(root)
        except OSError as exc:
            raise HomeError(
                f"the state directory {root} cannot be created ({exc.strerror or exc}): {hint}"
            ) from None
    if write and not os.access(root, os.W_OK | os.X_OK):
        raise HomeError(
            f"the state directory {root} is not writable by this user: {hint}, or make it writable"
        )
    return root


def mark_home(root: str | os.PathLike) -> Path:
    """Write the marker saying this toolkit owns `root` (see `HOME_MARKER`)."""
    marker = Path(root) / HOME_MARKER
    if not marker.exists():
        marker.write_text(
            "This directory is a chaosmessaging state directory: `chaosmessaging stack down "
            "--purge` may delete the data/ it created here.\n"
        )
    return marker


def is_marked_home(root: str | os.PathLike) -> bool:
    return (Path(root) / HOME_MARKER).is_file()


@dataclass
class ServiceRecord:
    name: str
    pid: int | None
    host: str
    port: int
    address: str
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log: str = ""
    user: str | None = None
    direct_address: str | None = None
    create_time: float | None = None
    # how to tell it is alive: "tcp", "postgres", or an HTTP path such as "/healthz"
    health: str = "tcp"
    # HTTP path answering 200 once its dependencies are reachable (None: alive is ready)
    ready: str | None = None
    # the home in its OWNER_ENV marker (records written before this field: the log's home)
    owner: str | None = None
    # the target backend that reaches it (chaosmessaging.backends): "process" (None) or "docker"
    # for a service `stack up --docker` runs as a container, with that backend's settings
    backend: str | None = None
    docker: dict | None = None

    def owner_home(self) -> str | None:
        if self.owner:
            return self.owner
        return str(Path(self.log).resolve().parent.parent) if self.log else None

    # base URL of a separate metrics listener (Synapse: serves /_synapse/metrics there)
    metrics_address: str | None = None

    def alive(self) -> bool:
        """True if our pid still runs and is provably the process we started: same pid, same
        start time, our owner marker (never a reused pid, never someone else's process); for a
        service run as a container, if its container runs."""
        if self.backend == "docker":
            from chaosmessaging.stack.containers import running

            return running(self)
        return self.identity()[0] is not None

    def identity(self):  # -> tuple[psutil.Process | None, str | None], see util.our_process
        """`util.our_process` for this record: (process, None) when alive and ours, (None,
        None) when gone, (None, reason) when a live process holds the pid but is not provably
        ours (never signal it)."""
        return our_process(self.pid, self.create_time, self.owner_home())


@dataclass
class StackState:
    home: str
    started_at: float
    services: dict[str, ServiceRecord]
    version: int = 1
    # True from the first write of `stack up` until every service is ready: a state still
    # "starting" when no start holds the home's lock is what an interrupted start left
    starting: bool = False
    # which platform the stack runs: "reference" (msgstack) or "matrix" (Synapse)
    platform: str = "reference"

    def service(self, name: str) -> ServiceRecord:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise KeyError(
                f"no service named {name!r} in the embedded stack (known: {known})"
            ) from None

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "home": self.home,
            "started_at": self.started_at,
            "starting": self.starting,
            "platform": self.platform,
            "services": {n: asdict(s) for n, s in self.services.items()},
        }


def state_path(home: str | os.PathLike | None = None) -> Path:
    return stack_home(home) / "stack.json"


def load_state(home: str | os.PathLike | None = None) -> StackState:
    """Read the stack state, or raise StackNotRunning with how to start it."""
    path = state_path(home)
    if not path.exists():
        raise StackNotRunning(
            f"no embedded stack found at {path}; start one with "
            "`chaosmessaging stack up` (or set CHAOSMESSAGING_HOME)"
        )
    try:
        raw = json.loads(path.read_text())
        services = {n: ServiceRecord(**s) for n, s in raw.get("services", {}).items()}
        return StackState(
            home=raw["home"],
            started_at=raw["started_at"],
            services=services,
            version=raw.get("version", 1),
            starting=bool(raw.get("starting")),
            platform=raw.get("platform", "reference"),
        )
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise StackStateError(
            f"the stack state file {path} is unreadable or corrupt ({detail}); run "
            "`chaosmessaging stack down` to stop whatever this home started and set the file "
            "aside, then `chaosmessaging stack up` again",
            path,
            detail,
        ) from None


def save_state(state: StackState) -> Path:
    """Write the state atomically (a reader never sees half a file)."""
    return atomic_write_json(state_path(state.home), state.to_json())


# --- runs using the stack -------------------------------------------------------------------


def _users_dir(home: str | os.PathLike | None) -> Path:
    return stack_home(home) / "users"


def register_user(home: str | os.PathLike | None, what: str) -> Path:
    """Note that this process (a chaos run) uses the stack in `home`, so `stack down` warns
    first; `unregister_user` removes the note (a dead process's note is ignored)."""
    import time

    import psutil

    me = psutil.Process()
    path = _users_dir(home) / f"{me.pid}.json"
    atomic_write_json(
        path,
        {"pid": me.pid, "create_time": me.create_time(), "what": what, "since": time.time()},
    )
    return path


def unregister_user(home: str | os.PathLike | None) -> None:
    (_users_dir(home) / f"{os.getpid()}.json").unlink(missing_ok=True)


def active_users(home: str | os.PathLike | None) -> list[dict]:
    """The live processes (other than this one) that noted they use the stack in `home`."""
    from chaosmessaging.util import same_process

    found = []
    for path in sorted(_users_dir(home).glob("*.json")):
        try:
            user = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if user.get("pid") == os.getpid():
            continue
        if same_process(user.get("pid"), user.get("create_time")) is None:
            path.unlink(missing_ok=True)  # its process is gone
            continue
        found.append(user)
    return found

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
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaosmessaging.util import atomic_write_json, same_process, stack_home

__all__ = ["ServiceRecord", "StackNotRunning", "StackState", "load_state", "save_state",
           "stack_home"]


class StackNotRunning(RuntimeError):
    """No embedded stack state was found where we looked."""


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

    def alive(self) -> bool:
        """True if our pid still runs and is the process we started (not a reused pid)."""
        return same_process(self.pid, self.create_time) is not None


@dataclass
class StackState:
    home: str
    started_at: float
    services: dict[str, ServiceRecord]
    version: int = 1

    def service(self, name: str) -> ServiceRecord:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise KeyError(f"no service named {name!r} in the embedded stack "
                           f"(known: {known})") from None

    def to_json(self) -> dict:
        return {"version": self.version, "home": self.home, "started_at": self.started_at,
                "services": {n: asdict(s) for n, s in self.services.items()}}


def state_path(home: str | os.PathLike | None = None) -> Path:
    return stack_home(home) / "stack.json"


def load_state(home: str | os.PathLike | None = None) -> StackState:
    """Read the stack state, or raise StackNotRunning with how to start it."""
    path = state_path(home)
    if not path.exists():
        raise StackNotRunning(f"no embedded stack found at {path}; start one with "
                              "`chaosmessaging stack up` (or set CHAOSMESSAGING_HOME)")
    raw = json.loads(path.read_text())
    services = {n: ServiceRecord(**s) for n, s in raw.get("services", {}).items()}
    return StackState(home=raw["home"], started_at=raw["started_at"], services=services,
                      version=raw.get("version", 1))


def save_state(state: StackState) -> Path:
    """Write the state atomically (a reader never sees half a file)."""
    return atomic_write_json(state_path(state.home), state.to_json())

"""The `process` target backend: services of the embedded stack, as local process groups.

Identity = pid + create time (from the stack's state file, `<home>/stack.json`). Signals go to the
service's process group through `chaosmessaging.stack.control`, which checks the pid still is the
process the stack started (same create time) and knows how to start it again. `start` and
`restart` return once the service is healthy and its readiness path answers 200.
"""

from __future__ import annotations

import signal as _signal
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmessaging.backends import BackendError, Identity, NotSupported, TargetNotFound
from chaosmessaging.stack import control
from chaosmessaging.stack.health import wait_ready
from chaosmessaging.stack.state import StackNotRunning, StackStateError, load_state
from chaosmessaging.util import home_of

__all__ = ["ProcessBackend"]

_PAUSING = {_signal.SIGSTOP, _signal.SIGTSTP}


class ProcessBackend:
    """Services of the embedded stack in `home` (None: $CHAOSMESSAGING_HOME, ./.chaosmessaging)."""

    name = "process"

    def __init__(self, home: str | None = None) -> None:
        self.home = home

    @classmethod
    def from_configuration(
        cls,
        configuration: Configuration = None,
        secrets: Secrets = None,
        service: str | None = None,
    ) -> ProcessBackend:
        return cls(home_of(configuration))

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> ProcessBackend:
        return cls(description.get("home"))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "home": self.home}

    # -- reading -------------------------------------------------------------------------

    def _state(self):
        try:
            return load_state(self.home)
        except (StackNotRunning, StackStateError) as exc:
            raise BackendError(f"{exc}: the process backend reads the embedded stack") from None

    def _record(self, service: str):
        try:
            return self._state().service(service)
        except KeyError as exc:
            raise TargetNotFound(str(exc).strip("'\"")) from None

    def instances(self, service: str) -> list[Identity]:
        record = self._state().services.get(service)
        if record is None:
            return []
        return [
            Identity(
                backend=self.name,
                service=service,
                instance=str(record.pid) if record.pid else "",
                started_at=record.create_time,
                restarts=0,
                name=f"{service} (pid {record.pid})",
                alive=record.alive(),
            )
        ]

    def ready(self, service: str) -> bool:
        from chaosmessaging.stack.health import is_healthy

        record = self._record(service)
        if not is_healthy(record):
            return False
        try:
            wait_ready(record, timeout=0.1)
        except Exception:
            return False
        return True

    # -- faults --------------------------------------------------------------------------

    def _running(self, service: str, instance: str | None) -> list[Identity]:
        found = [i for i in self.instances(service) if i.alive]
        if not found:
            if self._state().services.get(service) is None:
                raise TargetNotFound(
                    f"no service named {service!r} in the embedded stack "
                    f"(known: {', '.join(sorted(self._state().services))})"
                )
            raise BackendError(
                f"service {service!r} of the embedded stack is not running; start it with the "
                "start_service action or `chaosmessaging stack up`"
            )
        if instance is not None and all(i.instance != str(instance) for i in found):
            raise TargetNotFound(f"{service} runs as pid {found[0].instance}, not {instance}")
        return found

    def kill(
        self,
        service: str,
        signal: str = "SIGKILL",
        instance: str | None = None,
        grace: float = 10.0,
    ) -> list[Identity]:
        before = self._running(service, instance)
        try:
            control.stop_service(service, signal, home=self.home, timeout=grace)
        except ValueError as exc:
            raise BackendError(f"{exc}; or give a number") from None
        return before

    def stop(self, service: str, timeout: float = 10.0) -> list[Identity]:
        before = self.instances(service)
        try:
            control.terminate_service(service, "SIGTERM", home=self.home, timeout=timeout)
        except KeyError as exc:
            raise TargetNotFound(str(exc).strip("'\"")) from None
        return before

    def start(self, service: str, timeout: float = 60.0) -> list[Identity]:
        try:
            record = control.start_service(service, home=self.home, timeout=timeout)
            wait_ready(record, timeout)
        except KeyError as exc:
            raise TargetNotFound(str(exc).strip("'\"")) from None
        except (StackNotRunning, StackStateError) as exc:
            raise BackendError(str(exc)) from None
        except Exception as exc:
            raise BackendError(
                f"service {service!r} did not come back ready: {exc}; see its log under <home>/logs"
            ) from None
        return self.instances(service)

    def restart(
        self, service: str, signal: str = "SIGTERM", timeout: float = 60.0
    ) -> list[Identity]:
        try:
            control.terminate_service(service, signal, home=self.home, timeout=timeout)
        except KeyError as exc:
            raise TargetNotFound(str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        return self.start(service, timeout)

    def pause(self, service: str) -> list[Identity]:
        before = self._running(service, None)
        control.stop_service(service, "SIGSTOP", home=self.home)
        return before

    def unpause(self, service: str) -> list[Identity]:
        control.stop_service(service, "SIGCONT", home=self.home)
        return self.instances(service)

    def partition(self, service: str) -> list[Identity]:
        raise NotSupported(
            "the process backend cannot cut a local process off the network: put the fault "
            "proxy between it and its clients (chaosmessaging.actions.toxiproxy) instead"
        )

    def reconnect(self, service: str, timeout: float = 60.0) -> list[Identity]:
        return self.partition(service)


def is_pausing(signum: int) -> bool:
    """SIGSTOP/SIGTSTP pause rather than end a process."""
    return signum in _PAUSING

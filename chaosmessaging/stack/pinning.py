"""CPU sets for the load generator and the stack, by configuration.

On a small machine k6 and the stack it measures compete for the same cores; pinning them to
separate CPU sets (or k6 to a core of its own) makes a run's figures say what the stack does,
not who won the scheduler. Two variables, both optional, in the environment of the process that
starts them (`chaosmessaging stack up` / the nightly runner / the benchmarks):

- ``CHAOSMESSAGING_STACK_CPUS``: the CPU set of every process the embedded stack starts (Redis,
  PostgreSQL, the fault proxy, the reference services and their children);
- ``CHAOSMESSAGING_K6_CPUS``: the CPU set of every k6 run (`start_load`, the benchmarks);
- ``CHAOSMESSAGING_PIPELINE_NICE``: a niceness (1-19) for the reference stack's asynchronous
  services (dispatcher, consumer, gateway), so that on a shared machine the request path (API,
  auth) wins the scheduler and the pipeline works in the gaps; its lag is judged in seconds,
  the API's latency in milliseconds. Unset or 0: no change.

Every k6 run also gets ``GOGC=300`` (`k6_environment`) unless ``GOGC`` is set already: k6's
JavaScript allocates per request, and Go's collector at its default (100) took about a tenth of
k6's CPU at 600-1,000 messages/s; at 300 k6 spent 8 % less CPU per message (docs/performance.md)
for a larger heap. ``GOMEMLIMIT=2GiB`` (unless set) caps what that may cost: near the limit Go
collects as often as it must, so a run with many VUs holds its heap below it instead of growing
to four times its live data. ``GOGC=100`` restores Go's default.

A CPU set is a list of CPU numbers and ranges as `taskset -c` takes it: ``0``, ``1``, ``0-1``,
``0,2-3``. Unset (the default) leaves scheduling to the kernel. Pinning uses
`os.sched_setaffinity` in the child before it runs (Linux); a CPU this process may not use is a
configuration error naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

__all__ = [
    "K6_CPUS",
    "K6_GOGC",
    "K6_GOMEMLIMIT",
    "PIPELINE_NICE",
    "STACK_CPUS",
    "cpus_from_env",
    "k6_environment",
    "nice_from_env",
    "parse_cpus",
    "pin_child",
    "stack_child",
]

K6_CPUS = "CHAOSMESSAGING_K6_CPUS"
STACK_CPUS = "CHAOSMESSAGING_STACK_CPUS"
PIPELINE_NICE = "CHAOSMESSAGING_PIPELINE_NICE"
# Go's collector target for k6 (percent heap growth between collections; Go's default is 100)
# and the soft memory limit that bounds it
K6_GOGC = "300"
K6_GOMEMLIMIT = "2GiB"
# the reference services that work behind the request path (the outbox, the stream, delivery)
PIPELINE = frozenset({"dispatcher", "consumer", "gateway"})


def parse_cpus(raw: str, variable: str) -> set[int]:
    """The CPU numbers `raw` lists ("0,2-3"); ValueError naming `variable` when malformed or
    outside the CPUs this process may use."""
    cpus: set[int] = set()
    try:
        for part in (p.strip() for p in raw.split(",") if p.strip()):
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
            if first < 0 or last < first:
                raise ValueError(part)
            cpus.update(range(first, last + 1))
    except ValueError:
        raise ValueError(
            f"{variable}={raw!r} is not a CPU list; write CPU numbers and ranges as taskset -c "
            "takes them, e.g. 0 or 0-1 or 0,2-3"
        ) from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise ValueError(
            f"{variable}={raw!r} names CPUs this process may not use; choose among "
            f"{sorted(allowed)}"
        )
    return cpus


def cpus_from_env(variable: str, env: dict[str, str] | None = None) -> set[int] | None:
    """The CPU set `variable` configures, or None when it is unset or empty."""
    raw = (os.environ if env is None else env).get(variable, "").strip()
    return parse_cpus(raw, variable) if raw else None


def pin_child(variable: str) -> Callable[[], None] | None:
    """A `preexec_fn` pinning a child process to the CPU set `variable` configures (None when
    unset), checked now so a bad value fails before anything starts."""
    cpus = cpus_from_env(variable)
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def nice_from_env(variable: str, env: dict[str, str] | None = None) -> int:
    """The niceness `variable` configures (0 when unset or empty); ValueError naming it when it
    is not a whole number from 0 to 19."""
    raw = (os.environ if env is None else env).get(variable, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 19:
        raise ValueError(f"{variable}={raw!r} is not a niceness; write a whole number from 0 to 19")
    return int(raw)


def stack_child(service: str) -> Callable[[], None] | None:
    """The `preexec_fn` of the embedded stack's process `service`: its CPU set
    (CHAOSMESSAGING_STACK_CPUS) and, for a pipeline service, its niceness
    (CHAOSMESSAGING_PIPELINE_NICE); None when neither applies. Checked now."""
    pin = pin_child(STACK_CPUS)
    nice = nice_from_env(PIPELINE_NICE) if service in PIPELINE else 0
    if pin is None and not nice:
        return None

    def setup() -> None:
        if pin is not None:
            pin()
        if nice:
            os.nice(nice)

    return setup


def k6_environment(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The environment of a k6 run: `base` (usually os.environ) with the usage report off,
    ``GOGC`` at `K6_GOGC` and ``GOMEMLIMIT`` at `K6_GOMEMLIMIT` unless `base` sets them, and
    `extra` on top."""
    env = {**base, "K6_NO_USAGE_REPORT": "true"}
    env.setdefault("GOGC", K6_GOGC)
    env.setdefault("GOMEMLIMIT", K6_GOMEMLIMIT)
    env.update(extra)
    return env

"""What the suite records around one experiment run, beside what the experiment records itself.

- `Watcher`: a thread that, while `chaos run` works, reads the fault ledger (so every fault's
  window, injected -> reverted, is known even though the ledger forgets a fault once it is
  cleared) and scrapes each service's `/metrics` (memory, CPU, consumer lag, PEL size, accepted /
  unavailable counters) on a fixed grid. Every experiment thus gets the dashboard's time series,
  whether or not it samples metrics itself.
- `collect`: after the run, copies into the experiment's results folder what the run left in the
  stack home (run facts, k6 summaries and logs, the experiment's own metric samples), the part of
  each service log written during the run, and the end-to-end delivery latency per second read
  from the deliveries ledger (API accept -> consumer delivery, the pipeline's real latency).

It reads the stack through `chaosmessaging.clients` and the ledger through `faults`; it never
injects anything.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from logzero import logger

from chaosmessaging import faults
from chaosmessaging.clients.http import SERVICE_URL_KEYS
from chaosmessaging.clients.prometheus import metrics_source, select
from chaosmessaging.util import atomic_write_json, stack_home

__all__ = ["Watcher", "collect", "known_runs", "SAMPLED", "log_offsets", "delivery_latency_series"]

#: metrics scraped from every service at each tick (absent ones are recorded as null)
SAMPLED = (
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "messaging_consumer_lag_seconds",
    "messaging_dispatch_lag_seconds",
    "messaging_consumer_pel_size",
    "messaging_messages_accepted_total",
    "messaging_api_unavailable_total",
    "messaging_payload_rejects_total",
    "messaging_dispatch_dlq_total",
    "messaging_consumer_delivered_total",
)


#: how often the fault ledger is read for fault windows
FAULT_POLL_S = 0.2


class Watcher(threading.Thread):
    """Samples the stack and the fault ledger every `interval_s` until `stop()`."""

    def __init__(
        self,
        home: str | Path,
        interval_s: float = 2.0,
        services: tuple[str, ...] = tuple(SERVICE_URL_KEYS),
    ) -> None:
        super().__init__(name="nightly-watcher", daemon=True)
        self.home = str(home)
        self.interval_s = interval_s
        self.services = services
        self.t: list[float] = []
        self.series: dict[str, dict[str, list]] = {s: {m: [] for m in SAMPLED} for s in services}
        self.series["connections"] = {"redis_clients": [], "postgres_backends": []}
        self._redis = None
        self.windows: dict[str, dict] = {}
        self.errors = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        if self._redis is not None:
            self._redis.close()
        self._faults(time.time())  # the last reverts land just before the run ends

    def run(self) -> None:
        # the ledger is read often (a kill-and-restart can last under a second), the services
        # scraped every interval_s on a fixed grid
        start = time.monotonic()
        tick = 0
        while not self._halt.is_set():
            self._faults(time.time())
            if time.monotonic() >= start + tick * self.interval_s:
                self._scrape(time.time())
                tick += 1
            self._halt.wait(
                min(FAULT_POLL_S, max(0.0, start + tick * self.interval_s - time.monotonic()))
            )

    def _faults(self, now: float) -> None:
        try:
            current = {f.id: f for f in faults.active(self.home)}
        except Exception as error:  # a half-written ledger must not stop the sampling
            logger.debug(f"watcher: fault ledger unreadable: {error}")
            return
        for fid, fault in current.items():
            if fid not in self.windows:
                self.windows[fid] = {
                    "id": fid,
                    "kind": fault.kind,
                    "target": fault.target,
                    "injected_at": fault.when,
                    "reverted_at": None,
                }
        for fid, window in self.windows.items():
            if fid not in current and window["reverted_at"] is None:
                window["reverted_at"] = now

    def _scrape(self, now: float) -> None:
        self.t.append(now)
        config = {"chaosmessaging_home": self.home}
        for service in self.services:
            scraped = None
            try:
                source = metrics_source(service, None, config)
                scraped = source.samples(1.5, fresh=False)
            except Exception:  # not up yet, killed by the experiment: a gap, not an error
                self.errors += 1
            for metric in SAMPLED:
                value = select(scraped, metric, {}) if scraped is not None else None
                self.series[service][metric].append(value)
        connections = self.series["connections"]
        connections["redis_clients"].append(self._redis_clients(config))
        connections["postgres_backends"].append(self._postgres_backends(config))

    def _redis_clients(self, config: dict) -> int | None:
        """Redis `connected_clients`, less the watcher's own connection."""
        try:
            if self._redis is None:
                from chaosmessaging.clients.redis import redis_client

                self._redis = redis_client(configuration=config)[0]
            return int(self._redis.info("clients")["connected_clients"]) - 1
        except Exception:
            self._redis = None
            return None

    def _postgres_backends(self, config: dict) -> int | None:
        """Client backends of the messaging database, less the watcher's own query."""
        from chaosmessaging.clients.postgres import pg_fetch

        try:
            rows = pg_fetch(
                "select count(*) as n from pg_stat_activity where datname = "
                "current_database() and backend_type = 'client backend'",
                configuration=config,
                timeout=1.5,
            )
            return int(rows[0]["n"]) - 1
        except Exception:
            return None

    def result(self) -> dict:
        return {
            "interval_s": self.interval_s,
            "t": self.t,
            "services": self.series,
            "scrape_gaps": self.errors,
        }

    def fault_windows(self) -> list[dict]:
        return sorted(self.windows.values(), key=lambda w: w["injected_at"])


def log_offsets(home: str | Path) -> dict[str, int]:
    """Current size of each service log, so `collect` copies only what a run appended."""
    logs = stack_home(home) / "logs"
    return {p.name: p.stat().st_size for p in logs.glob("*.log")} if logs.is_dir() else {}


def _copy(src_root: Path, dest: Path, pattern: str = "*") -> list[str]:
    """Copy the files under `src_root` matching `pattern` into `dest`, keeping their layout."""
    copied = []
    if not src_root.is_dir():
        return copied
    for path in sorted(src_root.rglob(pattern)):
        if path.is_file() and not path.name.endswith((".lock", ".tmp")):
            target = dest / path.relative_to(src_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(str(target))
    return copied


def delivery_latency_series(run_ids: list[str], home: str | Path) -> dict:
    """Per second of acceptance: count and p50/p95/p99 of end-to-end delivery latency (ms) of the
    messages these runs sent, from the deliveries ledger. Empty when the database is unreachable
    (a platform without our schema) or the runs sent nothing."""
    if not run_ids:
        return {}
    from chaosmessaging.clients.postgres import pg_fetch

    sql = """
        select floor(extract(epoch from m.created_at))::float8 as sec, count(*) as n,
               percentile_cont(0.5) within group (order by d.delivered_at - m.created_at) as p50,
               percentile_cont(0.95) within group (order by d.delivered_at - m.created_at) as p95,
               percentile_cont(0.99) within group (order by d.delivered_at - m.created_at) as p99
        from messages m join deliveries d on d.message_id = m.id
        where m.client_msg_id like any($1::text[])
        group by 1 order by 1"""
    patterns = [f"{run_id}/%" for run_id in run_ids]
    try:
        rows = pg_fetch(sql, [patterns], configuration={"chaosmessaging_home": str(home)})
    except Exception as error:
        logger.info(f"no delivery latency series: {error}")
        return {}

    def ms(value) -> float | None:
        return None if value is None else round(value.total_seconds() * 1000, 2)

    return {
        "t": [r["sec"] for r in rows],
        "count": [r["n"] for r in rows],
        "p50_ms": [ms(r["p50"]) for r in rows],
        "p95_ms": [ms(r["p95"]) for r in rows],
        "p99_ms": [ms(r["p99"]) for r in rows],
    }


def known_runs(home: str | Path) -> set[str]:
    """The run ids that already have facts in the stack home (taken before a run, so `collect`
    picks exactly the runs that are new: run ids are unique per `chaos run`)."""
    runs_dir = stack_home(home) / "runs"
    return (
        # `<run id>.json` only: a run's other files (`<run id>.samples-<label>.json`,
        # `<run id>.conversations-<label>.json`) carry a dot in their stem
        {p.stem for p in runs_dir.glob("*.json") if "." not in p.stem}
        if runs_dir.is_dir()
        else set()
    )


def collect(
    dest: Path, home: str | Path, before: set[str], offsets: dict[str, int], watcher: Watcher | None
) -> dict:
    """Copy the artifacts of the runs not in `before` from the stack home into `dest`; returns
    what was found: ``{"run_ids", "facts", "k6", "samples", "logs"}``."""
    home = stack_home(home)
    found: dict = {
        "run_ids": sorted(known_runs(home) - before),
        "facts": {},
        "k6": [],
        "samples": [],
        "logs": [],
    }
    runs_dir, loads = home / "runs", home / "load"
    for run_id in found["run_ids"]:
        found["facts"][run_id] = str(dest / "facts" / f"{run_id}.json")
        _copy(runs_dir, dest / "facts", f"{run_id}.json")
        found["samples"] += _copy(runs_dir, dest / "samples", f"{run_id}.samples-*.json")
        if (loads / run_id).is_dir():
            found["k6"] += _copy(loads / run_id, dest / "k6" / run_id)
    logs = home / "logs"
    for name in sorted(p.name for p in logs.glob("*.log")) if logs.is_dir() else []:
        target = dest / "logs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(logs / name, "rb") as src, open(target, "wb") as out:
            start = offsets.get(name, 0)
            src.seek(start if start <= (logs / name).stat().st_size else 0)
            shutil.copyfileobj(src, out)
        found["logs"].append(str(target))
    if watcher is not None:
        atomic_write_json(dest / "stack-samples.json", watcher.result(), indent=None)
        atomic_write_json(dest / "fault-windows.json", watcher.fault_windows())
    latency = delivery_latency_series(found["run_ids"], home)
    if latency:
        atomic_write_json(dest / "delivery-latency.json", latency, indent=None)
    return found

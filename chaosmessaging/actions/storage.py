"""Storage faults and operations: exhaust the application's PostgreSQL pool, run a migration under
load (timed), seed a large table (plan tests 10 and 13).

Pool exhaustion works from outside the application, on any platform: one session takes a lock on
a table the load writes (``SHARE ROW EXCLUSIVE`` on ``messages`` by default: reads go on, writes
wait), so every request that writes keeps its pooled connection while it waits; under load the
pool fills and further requests queue for a connection. The action does not assume that worked:
it reads the application's pool gauges (``storage_pool_in_use``, ``storage_pool_max``,
``storage_pool_waiting`` on its /metrics) and records whether in use == max with requests waiting
was observed, and for how long. The lock is a recorded fault (kind ``pg_lock``): the action
releases it when the duration ends, and `release_pool` (the rollback) or the safety net
terminates the lock-holding session if the run was interrupted.

Migrations run by file (executed here over asyncpg: statement by statement outside a transaction
when the file's first line is ``-- msgstack: no-transaction`` or it builds an index
CONCURRENTLY, else in one transaction) or by name through a command (default: the reference
stack's ``python -m msgstack migrate --name {name}``, with ``MSGSTACK_PG_DSN`` set from
``messaging_pg_dsn``). Either way the duration and wall-clock start and end are recorded in the
run's facts so the latency verdicts can compare the load before and during it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import faults, runs, targets
from chaosmessaging.clients.prometheus import metrics_source, select
from chaosmessaging.config import lookup, redact
from chaosmessaging.util import home_of

__all__ = ["exhaust_pool", "release_pool", "run_migration", "seed_table"]

LOCK_MODES = ("SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE", "SHARE")
NO_TRANSACTION_MARKER = "-- msgstack: no-transaction"
DEFAULT_MIGRATE_COMMAND = [sys.executable, "-m", "msgstack", "migrate", "--name", "{name}"]
DEFAULT_SEED_COMMAND = [sys.executable, "-m", "msgstack", "seed-messages", "--rows", "{rows}"]


def _quote_table(table: str) -> str:
    parts = str(table).split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", p) for p in parts) or len(parts) > 2:
        raise ActivityFailed(
            f"table {table!r} is not a plain [schema.]name; name the table the "
            "load writes, e.g. 'messages'"
        )
    return ".".join(f'"{p}"' for p in parts)


def _pool_figures(source, names: dict, fresh: bool = True) -> dict:
    # while the lock is held, polls take what the source has (a Prometheus scrape may lag)
    samples = source.samples(3.0, fresh=fresh)
    return {k: select(samples, name, {}) for k, name in names.items()}


def exhaust_pool(
    duration_s: float,
    table: str = "messages",
    lock_mode: str = "SHARE ROW EXCLUSIVE",
    service: str = "api",
    saturate_timeout_s: float = 15.0,
    poll_interval_s: float = 0.25,
    label: str = "pool_exhaustion",
    in_use_metric: str = "storage_pool_in_use",
    max_metric: str = "storage_pool_max",
    waiting_metric: str = "storage_pool_waiting",
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Exhaust the application's PostgreSQL pool for `duration_s` seconds, then release it. A
    session locks `table` in `lock_mode` (writes to it wait, holding their pooled connections)
    while the load runs; the pool gauges of `service`'s /metrics are read every
    `poll_interval_s` to observe the exhaustion (in use == max and requests waiting). Returns
    and records under `label`: `observed` (that state was seen within `saturate_timeout_s`),
    `saturated_s`, `max_in_use`, `pool_max`, `max_waiting`, `started_at`, `ended_at`. The lock
    is a recorded fault; `release_pool` is the rollback.
    """
    mode = " ".join(str(lock_mode).upper().split())
    if mode not in LOCK_MODES:
        raise ActivityFailed(f"lock_mode {lock_mode!r} must be one of {', '.join(LOCK_MODES)}")
    duration_s = float(duration_s)
    if duration_s <= 0:
        raise ActivityFailed(f"duration_s={duration_s:g} must be positive")
    target = _quote_table(table)
    dsn = targets.address("messaging_pg_dsn", configuration, secrets, dsn)  # loopback/allowed
    source = metrics_source(service, None, configuration, secrets)
    names = {"in_use": in_use_metric, "max": max_metric, "waiting": waiting_metric}
    before = _pool_figures(source, names)
    if before["in_use"] is None or before["max"] is None:
        raise ActivityFailed(
            f"{source.where} exposes no {in_use_metric}/{max_metric}: the pool "
            "cannot be observed; pass the metric names your service exposes"
        )
    home = home_of(configuration)
    result = asyncio.run(
        _hold_lock(
            dsn,
            target,
            mode,
            duration_s,
            float(saturate_timeout_s),
            float(poll_interval_s),
            source,
            names,
            home,
        )
    )
    runs.record(label, result, home=home)
    say = logger.info if result["observed"] else logger.warning
    say(
        f"pool exhaustion {'observed' if result['observed'] else 'NOT observed'}: in use max "
        f"{result['max_in_use']:g}/{result['pool_max']:g}, waiting max {result['max_waiting']:g},"
        f" saturated {result['saturated_s']:.1f}s of {duration_s:g}s"
    )
    return result


async def _hold_lock(
    dsn: str,
    target: str,
    mode: str,
    duration_s: float,
    saturate_timeout: float,
    interval: float,
    source,
    names: dict,
    home: str | None,
) -> dict:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise ActivityFailed(
            f"cannot connect to PostgreSQL at {redact(dsn)} to lock {target}: {redact(str(error))}"
        ) from None
    fault_id = None
    figures = {
        "max_in_use": 0.0,
        "pool_max": 0.0,
        "max_waiting": 0.0,
        "saturated_s": 0.0,
        "observed": False,
        "first_saturated_after_s": None,
        "samples": 0,
    }
    try:
        backend = await conn.fetchrow(
            "SELECT pg_backend_pid() AS pid, backend_start::text AS bs "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"LOCK TABLE {target} IN {mode} MODE")
        started = time.time()
        fault_id = faults.record(
            "pg_lock",
            f"pg_lock:{backend['pid']}",
            {"backend_pid": backend["pid"], "backend_start": backend["bs"]},
            home=home,
            details={"table": target, "mode": mode, "duration_s": duration_s},
        )
        logger.info(
            f"locked {target} in {mode} mode for {duration_s:g}s (backend "
            f"{backend['pid']}): writes wait, holding pooled connections"
        )
        last = time.monotonic()
        while time.time() - started < duration_s:
            await asyncio.sleep(min(interval, max(0.0, duration_s - (time.time() - started))))
            try:
                seen = await asyncio.to_thread(_pool_figures, source, names, False)
            except ActivityFailed as error:  # the service may be too busy to answer: a gap
                logger.debug(f"pool gauges unreadable: {error}")
                continue
            now = time.monotonic()
            in_use, top, waiting = (
                seen["in_use"] or 0.0,
                seen["max"] or 0.0,
                seen["waiting"] or 0.0,
            )
            figures["samples"] += 1
            logger.debug(
                f"pool at {time.time() - started:.2f}s: in use {in_use:g}/{top:g}, "
                f"waiting {waiting:g}"
            )
            figures["max_in_use"] = max(figures["max_in_use"], in_use)
            figures["pool_max"] = max(figures["pool_max"], top)
            figures["max_waiting"] = max(figures["max_waiting"], waiting)
            saturated = top > 0 and in_use >= top and waiting > 0
            if saturated:
                figures["saturated_s"] += now - last
                if figures["first_saturated_after_s"] is None:
                    figures["first_saturated_after_s"] = round(time.time() - started, 2)
                    if time.time() - started <= saturate_timeout:
                        figures["observed"] = True
            last = now
        await tx.rollback()
        ended = time.time()
    finally:
        await conn.close(timeout=5)
        if fault_id:
            faults.clear(fault_id, home)
    figures["saturated_s"] = round(figures["saturated_s"], 2)
    return {
        **figures,
        "started_at": started,
        "ended_at": ended,
        "duration_s": duration_s,
        "table": target,
        "lock_mode": mode,
    }


def _terminate(recipe: dict, home: Path) -> dict:
    dsn = lookup("messaging_pg_dsn", {"chaosmessaging_home": str(home)})

    async def go() -> bool:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid = $1 AND backend_start::text = $2",
                    int(recipe["backend_pid"]),
                    str(recipe.get("backend_start")),
                )
            )
        finally:
            await conn.close()

    terminated = asyncio.run(go())
    return {"backend_pid": recipe["backend_pid"], "terminated": terminated}


def release_pool(configuration: Configuration = None, secrets: Secrets = None) -> list:
    """
    Rollback of `exhaust_pool`: end every table lock it recorded and did not release (the
    lock-holding session is terminated, so the waiting writes proceed and the pool drains).
    Returns one entry per lock released; an empty list when none was left.
    """
    home = home_of(configuration)
    released = []
    for fault in faults.active(home):
        if fault.kind == "pg_lock":
            released.append(faults.revert(fault, home))
    return released


def _statements(sql: str) -> list[str]:
    """Statements end with `;` at a line end, except inside a `$$`-quoted body (a DO block)."""
    statements, current = [], ""
    for part in re.split(r"(;[ \t]*$)", sql, flags=re.MULTILINE):
        current += part
        if part.startswith(";") and current.count("$$") % 2 == 0:
            statements.append(current)
            current = ""
    statements.append(current)
    return [
        p.strip()
        for p in statements
        if any(ln.strip() and not ln.strip().startswith("--") for ln in p.splitlines())
    ]


async def _run_file(dsn: str, path: Path, lock_timeout: str) -> None:
    sql = path.read_text()
    first = sql.lstrip().splitlines()[0].strip() if sql.strip() else ""
    code = "\n".join(ln for ln in sql.splitlines() if not ln.strip().startswith("--"))
    outside_tx = first == NO_TRANSACTION_MARKER or "CONCURRENTLY" in code.upper()
    conn = await asyncpg.connect(dsn, timeout=10, command_timeout=None)
    try:
        await conn.execute(f"SET lock_timeout = '{lock_timeout}'")
        if outside_tx:
            for statement in _statements(sql):
                await conn.execute(statement)
        else:
            async with conn.transaction():
                await conn.execute(sql)
    finally:
        await conn.close(timeout=5)


def _run_command(cmd: list[str], env: dict, timeout_s: float, what: str) -> str:
    try:
        proc = subprocess.run(
            cmd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ActivityFailed(f"{what} did not finish within {timeout_s:g}s") from None
    except OSError as error:
        raise ActivityFailed(f"cannot run {what} ({cmd[0]}): {error}") from None
    if proc.returncode != 0:
        log = "\n  ".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise ActivityFailed(f"{what} failed (exit {proc.returncode}):\n  {redact(log)}")
    return proc.stdout


def run_migration(
    migration: str,
    command: list = None,
    label: str = "migration",
    lock_timeout: str = "10s",
    timeout_s: float = 600,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Run one database migration now (meant to run under load) and time it. `migration` is a
    `.sql` file (run here over `messaging_pg_dsn`, statement by statement outside a transaction
    when it builds an index CONCURRENTLY or starts with `-- msgstack: no-transaction`) or a name
    run through `command` (default: `python -m msgstack migrate --name {name}`; `{name}` is
    replaced, MSGSTACK_PG_DSN is set). Returns and records under `label`: `migration`,
    `seconds`, `ok`, `started_at`, `ended_at` (epoch), `error`. A failed migration is recorded,
    then raised.
    """
    dsn = targets.address("messaging_pg_dsn", configuration, secrets, dsn)  # loopback/allowed
    home = home_of(configuration)
    is_file = str(migration).endswith(".sql") or os.sep in str(migration)
    started, error = time.time(), None
    t0 = time.monotonic()
    try:
        if is_file:
            path = Path(migration).expanduser()
            if not path.is_file():
                raise ActivityFailed(
                    f"migration file {path} does not exist (relative paths "
                    f"resolve against {Path.cwd()})"
                )
            asyncio.run(_run_file(dsn, path, lock_timeout))
        else:
            cmd = [
                str(c).replace("{name}", str(migration))
                for c in (command or DEFAULT_MIGRATE_COMMAND)
            ]
            _run_command(cmd, {"MSGSTACK_PG_DSN": dsn}, float(timeout_s), f"migration {migration}")
    except (ActivityFailed, asyncpg.PostgresError, OSError) as exc:
        error = redact(str(exc)) or type(exc).__name__
    seconds = round(time.monotonic() - t0, 3)
    result = {
        "migration": str(migration),
        "seconds": seconds,
        "ok": error is None,
        "started_at": started,
        "ended_at": time.time(),
        "error": error,
    }
    runs.record(label, result, home=home)
    if error:
        raise ActivityFailed(f"migration {migration} failed after {seconds:g}s: {error}")
    logger.info(f"migration {migration} took {seconds:g}s")
    return result


def seed_table(
    rows: int,
    command: list = None,
    timeout_s: float = 1800,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Make the table a migration works on large (plan T13: the index build must take seconds;
    nightly millions of rows). Runs `command` (default:
    `python -m msgstack seed-messages --rows {rows}`, with MSGSTACK_PG_DSN set from
    `messaging_pg_dsn`); `rows` is the target count, so a second run adds nothing.
    Returns `{"rows", "seconds", "output"}` (the command's last output line).
    """
    dsn = targets.address("messaging_pg_dsn", configuration, secrets, dsn)  # loopback/allowed
    cmd = [str(c).replace("{rows}", str(int(rows))) for c in (command or DEFAULT_SEED_COMMAND)]
    t0 = time.monotonic()
    out = _run_command(cmd, {"MSGSTACK_PG_DSN": dsn}, float(timeout_s), "seed command")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    try:
        parsed = json.loads(last)
    except ValueError:
        parsed = last
    seconds = round(time.monotonic() - t0, 2)
    logger.info(f"seeded to {int(rows)} rows in {seconds:g}s")
    return {"rows": int(rows), "seconds": seconds, "output": parsed}

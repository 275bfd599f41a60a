"""Versioned SQL migrations: ``python -m msgstack migrate`` applies the missing ones in order.

Files are ``migrations/NNNN_name.sql``; the version recorded in ``schema_migrations`` is the file
name without ``.sql``. Each file runs in one transaction together with its record, so a failed file
leaves nothing behind. A file whose first line is ``-- msgstack: no-transaction`` runs statement by
statement outside a transaction instead (needed by ``CREATE INDEX CONCURRENTLY``); such a file must
be written to be re-runnable (IF [NOT] EXISTS) and end each statement with ``;`` at a line end.

Online migrations meant to run under load (plan test 13) live in ``migrations/online/``: a plain
``migrate`` never applies them; `apply_one` runs one by name (``migrate --name NNNN_name``) or any
file (``migrate --file path.sql``), every time it is asked (such files are re-runnable), and
records its version.

Safe to run twice (applied versions are skipped) and concurrently: a session advisory lock lets
one migrator work at a time. The lock is polled with ``pg_try_advisory_lock`` rather than awaited,
because a session blocked inside a statement would hold a snapshot that CREATE INDEX CONCURRENTLY
waits for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from msgstack import db, mutants

__all__ = [
    "MIGRATIONS_DIR",
    "ONLINE_DIR",
    "Migration",
    "MigrationError",
    "apply",
    "apply_one",
    "discover",
    "resolve",
]

log = logging.getLogger("msgstack.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
ONLINE_DIR = MIGRATIONS_DIR / "online"
NO_TRANSACTION_MARKER = "-- msgstack: no-transaction"
LOCK_KEY = 7_236_711_524_170_621  # arbitrary, constant: "msgstack migrations"
CONNECT_WAIT = 30.0
LOCK_WAIT = 120.0
# An online migration must not queue behind a long transaction while holding up all traffic.
LOCK_TIMEOUT = "10s"
_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration could not be found, parsed or applied."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str
    transactional: bool

    def statements(self) -> list[str]:
        """The file split into statements (for no-transaction files); a ``;`` at a line end
        inside a ``$$``-quoted body (a DO block) does not end the statement."""
        statements, current = [], ""
        for part in re.split(r"(;[ \t]*$)", self.sql, flags=re.MULTILINE):
            current += part
            if part.startswith(";") and current.count("$$") % 2 == 0:
                statements.append(current)
                current = ""
        statements.append(current)
        out = [p.strip() for p in statements if _has_code(p)]
        if mutants.on("migrate_strips_concurrently"):  # MUTANT: the index build blocks writes
            out = [s.replace(" CONCURRENTLY", "") for s in out]
        if mutants.on("migrate_volatile_default"):  # MUTANT: a per-row default rewrites the table
            out = [
                s.replace("DEFAULT 'standard'", "DEFAULT ('standard' || left(random()::text, 0))")
                for s in out
            ]
        return out


def _has_code(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def _load(path: Path) -> Migration:
    sql = path.read_text()
    first = sql.lstrip().splitlines()[0].strip() if sql.strip() else ""
    return Migration(path.stem, sql, first != NO_TRANSACTION_MARKER)


def resolve(name: str | None = None, file: str | Path | None = None) -> Migration:
    """The migration named `name` (in online/, then the regular directory) or in `file`."""
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise MigrationError(f"no migration file {path}; pass an existing .sql file")
        return _load(path)
    for directory in (ONLINE_DIR, MIGRATIONS_DIR):
        path = directory / f"{name}.sql"
        if name and path.is_file():
            return _load(path)
    known = sorted(p.stem for d in (ONLINE_DIR, MIGRATIONS_DIR) for p in d.glob("*.sql"))
    raise MigrationError(f"no migration named {name!r}; known: {', '.join(known)}")


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migrations in `directory`, in version order."""
    found: dict[str, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path} is not named NNNN_description.sql; rename it")
        if match.group(1) in found:
            raise MigrationError(
                f"{path} and {found[match.group(1)]} share number {match.group(1)}; "
                "give each migration its own number"
            )
        found[match.group(1)] = path
    return [_load(found[number]) for number in sorted(found)]


async def _connect(dsn: str) -> asyncpg.Connection:
    deadline = time.monotonic() + CONNECT_WAIT
    while True:
        try:
            return await asyncpg.connect(dsn, timeout=db.CONNECT_TIMEOUT, command_timeout=None)
        except db.TRANSIENT_ERRORS as exc:
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"cannot connect to PostgreSQL within {CONNECT_WAIT:.0f}s "
                    f"({db.describe(exc)}); check MSGSTACK_PG_DSN"
                ) from exc
            log.info("waiting for PostgreSQL: %s", db.describe(exc))
            await asyncio.sleep(0.5)


async def _lock(conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + LOCK_WAIT
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        if time.monotonic() > deadline:
            raise MigrationError(
                f"another migrator held the migration lock for over "
                f"{LOCK_WAIT:.0f}s; check for a stuck `msgstack migrate`"
            )
        await asyncio.sleep(0.2)


async def apply(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied now."""
    migrations = discover(directory)
    conn = await _connect(dsn)
    try:
        await _lock(conn)
        await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for m in migrations:
            if m.version in done:
                continue
            log.info("applying %s%s", m.version, "" if m.transactional else " (no transaction)")
            started = time.monotonic()
            try:
                if m.transactional:
                    async with conn.transaction():
                        await conn.execute(m.sql)
                        await _record(conn, m)
                else:
                    for statement in m.statements():
                        await conn.execute(statement)
                    await _record(conn, m)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {m.version} failed: {db.describe(exc)}") from exc
            log.info("applied %s in %.2fs", m.version, time.monotonic() - started)
            applied.append(m.version)
        if not applied:
            log.info("schema is up to date (%d migrations)", len(migrations))
        return applied
    finally:
        await conn.close(timeout=2)  # closing the session also releases the advisory lock


async def _record(conn: asyncpg.Connection, m: Migration) -> None:
    await conn.execute(
        "INSERT INTO schema_migrations (version) VALUES ($1) "
        "ON CONFLICT (version) DO UPDATE SET applied_at = now()",
        m.version,
    )


NICE_ENV = "MSGSTACK_MIGRATE_NICE"


async def pace(conn: asyncpg.Connection, nice: int) -> bool:
    """Lower the CPU priority of `conn`'s server process to `nice` (1..19), so an online
    migration (an index build over millions of rows) takes the CPU the services leave idle
    instead of an equal share of it. Works when PostgreSQL runs on this machine and this
    process may renice its backend (same user, or root: the embedded stack); otherwise logs
    why and returns False (the migration runs unpaced)."""
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:  # another host (no such pid here) or not ours to renice
        log.warning("cannot pace the migration (renice backend %s): %s", pid, exc)
        return False
    log.info("migration backend %s runs at nice %d (%s)", pid, nice, NICE_ENV)
    return True


def _nice() -> int | None:
    raw = os.environ.get(NICE_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 19:
        raise MigrationError(f"{NICE_ENV}={raw!r}: give a niceness 1..19, or unset it")
    return int(raw)


async def apply_one(dsn: str, migration: Migration) -> float:
    """Run `migration` now (even if recorded before) and record it; return its seconds.

    With MSGSTACK_MIGRATE_NICE set, its server process runs at that niceness (`pace`)."""
    nice = _nice()
    conn = await _connect(dsn)
    try:
        await _lock(conn)
        if nice is not None:
            await pace(conn, nice)
        await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        mode = "" if migration.transactional else " (no transaction)"
        log.info("running %s%s", migration.version, mode)
        started = time.monotonic()
        try:
            if migration.transactional:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await _record(conn, migration)
            else:
                for statement in migration.statements():
                    await conn.execute(statement)
                await _record(conn, migration)
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.version} failed: {db.describe(exc)}"
            ) from exc
        took = time.monotonic() - started
        log.info("ran %s in %.2fs", migration.version, took)
        return took
    finally:
        await conn.close(timeout=2)

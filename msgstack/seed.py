"""``python -m msgstack seed-users --count N --prefix P --password-env VAR``: load-test users.

Creates users ``<P>-0`` .. ``<P>-<N-1>``, all with the password held in the environment variable
VAR (never on the command line, never printed). Idempotent and convergent: a user that exists
with the right password is left alone; one whose hash does not match the password (or uses
other KDF parameters than the settings) gets a new hash. Hashing runs in a thread pool (argon2-cffi
releases the GIL), so seeding a hundred users takes about a second per core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg

from msgstack import passwords
from msgstack.config import Settings

__all__ = ["SeedError", "SeedResult", "parse_args", "seed_users"]

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_COUNT = 100_000


class SeedError(ValueError):
    """Bad arguments or environment; the message says what to fix."""


@dataclass(frozen=True)
class SeedResult:
    created: int
    rehashed: int
    unchanged: int

    def summary(self, prefix: str, count: int, env_name: str) -> str:
        return (
            f"seeded users {prefix}-0..{prefix}-{count - 1}: {self.created} created, "
            f"{self.rehashed} re-hashed, {self.unchanged} unchanged (password from ${env_name})"
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m msgstack seed-users",
        description="Create (or fix) load-test users <prefix>-0 .. <prefix>-<count-1>.",
    )
    parser.add_argument("--count", type=int, required=True, help="number of users")
    parser.add_argument("--prefix", default="loadtest", help="username prefix (default loadtest)")
    parser.add_argument(
        "--password-env",
        required=True,
        metavar="VAR",
        help="name of the environment variable holding the password (never pass it as argument)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        raise SeedError(f"--count must be 1..{MAX_COUNT}, got {args.count}")
    if not _PREFIX.match(args.prefix):
        raise SeedError("--prefix must be 1-64 characters of letters, digits, '_', '.' or '-'")
    return args


def password_from_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SeedError(f"environment variable {name} is not set or empty; export the password")
    return value


async def seed_users(settings: Settings, count: int, prefix: str, password: str) -> SeedResult:
    """Make users <prefix>-0..<prefix>-<count-1> exist with `password` (see module docstring)."""
    ph = passwords.hasher(settings)
    names = [f"{prefix}-{i}" for i in range(count)]
    conn = await asyncpg.connect(settings.pg_dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT username, password_hash FROM users WHERE username = ANY($1::text[])", names
        )
        existing = {r["username"]: r["password_hash"] for r in rows}
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:

            def still_good(stored: str) -> bool:
                return passwords.verify(ph, stored, password) and not ph.check_needs_rehash(stored)

            checks = await asyncio.gather(
                *(loop.run_in_executor(pool, still_good, existing[n]) for n in existing)
            )
            stale = [n for n, good in zip(existing, checks) if not good]
            missing = [n for n in names if n not in existing]
            hashes = await asyncio.gather(
                *(loop.run_in_executor(pool, ph.hash, password) for _ in missing + stale)
            )
        fresh = dict(zip(missing + stale, hashes))
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO users (username, password_hash) VALUES ($1, $2) "
                "ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash",
                list(fresh.items()),
            )
    finally:
        await conn.close()
    return SeedResult(
        created=len(missing), rehashed=len(stale), unchanged=len(existing) - len(stale)
    )

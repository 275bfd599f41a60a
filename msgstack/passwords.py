"""Password hashing with argon2id (argon2-cffi), parameters from the settings.

argon2-cffi calls the reference C implementation through CFFI, which releases the GIL, so a thread
pool of N workers verifies N passwords at once on N cores. Nothing here may run on the event loop:
the auth service calls `verify` through its executor.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from msgstack.config import Settings

__all__ = ["describe", "dummy_hash", "hasher", "verify"]


def hasher(settings: Settings) -> PasswordHasher:
    """An argon2id hasher with the configured cost (MSGSTACK_ARGON2_*)."""
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def describe(ph: PasswordHasher) -> str:
    """The KDF parameters, for logs and benchmarks (no secret in them)."""
    return (
        f"argon2id t={ph.time_cost} m={ph.memory_cost} KiB ({ph.memory_cost / 1024:.1f} MiB) "
        f"p={ph.parallelism}"
    )


def verify(ph: PasswordHasher, password_hash: str, password: str) -> bool:
    """True if `password` matches `password_hash`; False for a mismatch or an unusable hash."""
    try:
        return ph.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def dummy_hash(ph: PasswordHasher) -> str:
    """A hash of a random password: verified against for unknown users, so that an unknown user
    costs the same time as a wrong password (no user enumeration by timing)."""
    return ph.hash(secrets.token_urlsafe(24))

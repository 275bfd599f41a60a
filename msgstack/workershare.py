"""What the worker processes of one API share: the tokens each of them resolved.

`BearerAuth` remembers the tokens its process resolved so that, while Redis cannot answer, a
client it has seen keeps working (docs/reference-stack.md, Authentication). With several worker
processes on one port a client's next connection may reach a sibling that never saw its token;
this store lets every worker recall what any of them resolved. It is a SQLite file in a private
directory the API's supervisor creates (`MSGSTACK_WORKERS_DIR`, removed when it stops), holding a
SHA-256 of each token (never the token), its user id and its expiry (wall clock). A worker writes
a token once (the first time it resolves it) and reads the store only while Redis is down.

SQLite because it is in the standard library, safe across processes and durable enough for a
cache that may be lost at any time; every error reads as "not remembered".
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
import uuid
from pathlib import Path

__all__ = ["ENV", "SharedTokens", "from_env"]

ENV = "MSGSTACK_WORKERS_DIR"
log = logging.getLogger("msgstack.workershare")


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SharedTokens:
    """token hash -> (user id, expiry) in a SQLite file shared by sibling worker processes."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / "tokens.sqlite3"
        self._db = sqlite3.connect(self.path, timeout=0.5, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, user TEXT, expires REAL)"
        )

    def put(self, token: str, user: uuid.UUID, ttl: float) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)",
                (_key(token), str(user), time.time() + ttl),
            )
        except sqlite3.Error as exc:
            log.debug("token not shared: %s", exc)

    def get(self, token: str) -> tuple[uuid.UUID, float] | None:
        """(user, seconds left) of a token a sibling resolved, if it has not expired."""
        try:
            row = self._db.execute(
                "SELECT user, expires FROM tokens WHERE hash = ?", (_key(token),)
            ).fetchone()
        except sqlite3.Error as exc:
            log.debug("shared tokens unreadable: %s", exc)
            return None
        if row is None or row[1] <= time.time():
            return None
        return uuid.UUID(row[0]), row[1] - time.time()

    def delete(self, token: str) -> None:
        try:
            self._db.execute("DELETE FROM tokens WHERE hash = ?", (_key(token),))
        except sqlite3.Error as exc:
            log.debug("shared token not deleted: %s", exc)


def from_env() -> SharedTokens | None:
    """The store of this process' siblings, or None for a single-process service."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    try:
        return SharedTokens(directory)
    except (OSError, sqlite3.Error) as exc:
        log.warning("worker token store unavailable (%s); each worker remembers its own", exc)
        return None

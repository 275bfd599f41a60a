"""Test-only sabotage (plan T10), loaded by every Python process started with this directory on
PYTHONPATH (the sabotaged stack's services): the PostgreSQL adapter leaks its pooled connection
whenever the work fails (the release is skipped on the error path), the classic pool leak that
pool_exhaustion must catch. Never part of the reference stack.
"""

from msgstack.storage import postgres as _postgres


async def _leaky_run(self, work, idempotent=True):
    async def attempt():
        conn = await self._acquire()
        result = await work(conn)  # an error skips the release below: the connection leaks
        await self.pool.release(conn)
        return result

    return await self.guard.call(attempt, retry=idempotent)


_postgres.PostgresAdapter.run = _leaky_run

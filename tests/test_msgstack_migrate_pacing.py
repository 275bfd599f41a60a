"""An online migration can pace itself (plan T13): its PostgreSQL backend runs at a lower CPU
priority, so the services keep the CPU they need while the index builds."""

from __future__ import annotations

import asyncio

import asyncpg
import psutil
import pytest

from msgstack import migrate


def test_pace_renices_the_migration_backend_and_only_it(postgres_server):
    async def run():
        dsn = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
        paced, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            assert await migrate.pace(paced, 15)
            mine = await paced.fetchval("SELECT pg_backend_pid()")
            theirs = await other.fetchval("SELECT pg_backend_pid()")
            return psutil.Process(mine).nice(), psutil.Process(theirs).nice()
        finally:
            await paced.close()
            await other.close()

    paced, other = asyncio.run(run())
    assert paced == 15
    assert other < 15


@pytest.mark.parametrize("raw", ["0", "20", "x", "-3"])
def test_a_bad_niceness_is_a_configuration_error(monkeypatch, raw):
    monkeypatch.setenv(migrate.NICE_ENV, raw)
    with pytest.raises(migrate.MigrationError, match=migrate.NICE_ENV):
        migrate._nice()

"""The private servers start from the PyPI wheels, answer on loopback and fail clearly."""

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from chaosmessaging.stack import servers


def test_private_redis_answers_and_supports_streams(redis_server):
    r = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert r.ping()
    r.xadd("probe", {"a": "1"})
    r.xgroup_create("probe", "g", id="0")
    entries = r.xreadgroup("g", "c", {"probe": ">"}, count=1)
    assert entries[0][1][0][1] == {b"a": b"1"}
    assert redis_server.port not in (6379,)


def test_private_postgres_answers_on_loopback(postgres_server):
    servers.create_database(postgres_server.host, postgres_server.port, "probe_db")
    psql = str(servers.postgres_bin_dir() / "psql")
    out = subprocess.run(
        [psql, postgres_server.dsn("probe_db"), "-tAc", "select 40 + 2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"
    assert postgres_server.port != 5432


def test_bad_redis_override_says_what_to_fix(monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(servers.ServerError, match="CHAOSMESSAGING_REDIS_SERVER"):
        servers.redis_server_binary()


def test_bad_postgres_override_says_what_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("CHAOSMESSAGING_PG_BIN", str(tmp_path))
    with pytest.raises(servers.ServerError, match="CHAOSMESSAGING_PG_BIN"):
        servers.postgres_bin_dir()


def test_extra_postgres_settings_come_after_ours_and_win(monkeypatch):
    """CHAOSMESSAGING_PG_SETTINGS on a real server: a setting of ours (shared_buffers=64MB) is
    overridden, a preloaded library works (what `pipeline_bench.py --pg-statements` needs)."""
    monkeypatch.setenv(
        servers.PG_SETTINGS_ENV,
        "shared_preload_libraries=pg_stat_statements  work_mem=5MB shared_buffers=32MB",
    )
    settings = servers.postgres_settings()
    assert settings == [
        "shared_preload_libraries=pg_stat_statements",
        "work_mem=5MB",
        "shared_buffers=32MB",
    ]
    root = Path(tempfile.mkdtemp(prefix="chaosmessaging-pgsettings-"))
    port = servers.free_port()
    proc = servers.start_postgres(port, root / "data", settings=settings)
    psql = str(servers.postgres_bin_dir() / "psql")

    def ask(sql: str) -> str:
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        done = subprocess.run([psql, dsn, "-tAc", sql], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        assert ask("SHOW work_mem") == "5MB"
        assert ask("SHOW shared_buffers") == "32MB"
        ask("CREATE EXTENSION pg_stat_statements")
        assert int(ask("SELECT count(*) FROM pg_stat_statements")) >= 1
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(15)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("value", ["work_mem", "=5MB", "work mem=5MB", "-c=1"])
def test_a_malformed_postgres_setting_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(servers.PG_SETTINGS_ENV, value)
    with pytest.raises(ValueError, match=servers.PG_SETTINGS_ENV):
        servers.postgres_settings()

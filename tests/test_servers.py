"""The private servers start from the PyPI wheels, answer on loopback and fail clearly."""

import subprocess

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

"""payloads_intact (plan T11's "message bytes intact") on a real, migrated PostgreSQL: the SHA-256
in each client_msg_id is compared with the stored ciphertext's, so one flipped byte fails it."""

import hashlib
import os
import time
import uuid

import pytest
from test_msgstack_api import fresh_env, sql

from chaosmessaging import runs
from chaosmessaging.probes import marks
from chaosmessaging.probes.accounting import payloads_intact

INSERT = (
    "INSERT INTO messages (id, conversation_id, client_msg_id, ciphertext, size_bytes) "
    "VALUES ($1, $2, $3, $4, $5)"
)


@pytest.fixture
def config(postgres_server, redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    env = fresh_env(postgres_server, redis_server.url)
    config = {"chaosmessaging_home": str(tmp_path), "messaging_pg_dsn": env["MSGSTACK_PG_DSN"]}
    marks.mark("method", configuration=config)
    return config


def _store(config: dict, run: str, payload: bytes, digest: str | None) -> str:
    client_id = f"{run}:{uuid.uuid4().hex}" + (f".{digest}" if digest else "")
    sql(
        config["messaging_pg_dsn"],
        INSERT,
        uuid.uuid4(),
        uuid.uuid4(),
        client_id,
        payload,
        len(payload),
    )
    return client_id


def test_intact_payloads_pass_and_one_changed_byte_fails_naming_the_message(config):
    for _ in range(3):
        payload = os.urandom(1024)
        _store(config, "r/messages", payload, hashlib.sha256(payload).hexdigest())
    intact = payloads_intact(run_id="r/messages", configuration=config)
    assert intact["ok"] is True and intact["messages"] == 3
    payload = os.urandom(1024)
    flipped = bytes([payload[0] ^ 1]) + payload[1:]
    bad = _store(config, "r/messages", flipped, hashlib.sha256(payload).hexdigest())
    broken = payloads_intact(run_id="r/messages", configuration=config)
    assert broken["ok"] is False and broken["corrupted"] == 1
    assert broken["corrupted_ids"] == [bad]


def test_messages_without_a_digest_or_none_at_all_prove_nothing(config):
    assert payloads_intact(run_id="empty", configuration=config)["ok"] is False
    _store(config, "plain", os.urandom(1024), None)
    plain = payloads_intact(run_id="plain", configuration=config)
    assert plain["ok"] is False and plain["undigested"] == 1 and "DIGEST=1" in plain["reason"]

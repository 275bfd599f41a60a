"""The reference API's contract (accept, idempotency, 400/413/404/503, reads) and migrations.

The services run as real processes (`python -m msgstack <service>`) against private servers. The
helpers at the top (`start_service`, `fresh_env`, `sql`) are shared with test_msgstack_pipeline.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from chaosmessaging.stack import servers

REPO = Path(__file__).resolve().parent.parent

# One test identity in every test database (seeded by `fresh_env`): a user, its bearer token in
# Redis (the auth contract: auth:token:<token> -> user id) and a conversation it participates in,
# which `message()` posts into. Not secrets: they live in the session's private servers only.
TEST_USER = uuid.UUID("00000000-0000-4000-8000-0000000a11ce")
TEST_TOKEN = "test-token-of-alice"
TEST_CONVERSATION = uuid.UUID("00000000-0000-4000-8000-00000000c0c0")
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
# The database role each service connects as (migration 0004): never the owner, never BYPASSRLS.
SERVICE_ROLES = {
    "auth": "msgstack_auth",
    "api": "msgstack_api",
    "dispatcher": "msgstack_pipeline",
    "consumer": "msgstack_pipeline",
}


# --- helpers shared with test_msgstack_pipeline.py -------------------------------------------


@dataclass
class Service:
    """One msgstack service running as a subprocess."""

    name: str
    port: int
    proc: subprocess.Popen
    log: Path
    redis_url: str = ""

    def auth(self, user: uuid.UUID | None = None) -> dict[str, str]:
        """Authorization header of a fresh token for `user` (a new random user by default)."""
        return bearer(self.redis_url, user)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> float:
        """Send `sig` and wait for the exit; return how long the exit took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(
                    f"{self.name} ignored signal {sig} for {timeout}s\n{self.log_text()[-2000:]}"
                ) from None
        return time.monotonic() - started

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """Current value of a sample on /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return 0.0


def start_service(name: str, env: dict[str, str], log_dir: Path, **extra: str) -> Service:
    """Start `python -m msgstack name` on a free port and wait until /healthz answers."""
    port = servers.free_port()
    log = log_dir / f"{name}-{port}.log"
    full_env = {**os.environ, **env, **extra, "MSGSTACK_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    if name in SERVICE_ROLES:
        full_env["MSGSTACK_PG_DSN"] = role_dsn(full_env["MSGSTACK_PG_DSN"], SERVICE_ROLES[name])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "msgstack", name],
            env=full_env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = Service(name, port, proc, log, full_env.get("MSGSTACK_REDIS_URL", ""))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{service.log_text()}")
        try:
            if httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    service.stop(signal.SIGKILL)
    raise AssertionError(f"{name} did not answer /healthz within 20s:\n{service.log_text()}")


def role_dsn(dsn: str, role: str) -> str:
    """`dsn` with its user replaced by `role` (trust authentication in the test servers)."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[-1]}"


def grant_token(redis_url: str, user: uuid.UUID, token: str, ttl: int = 3600) -> None:
    """What a login does, per the auth contract: auth:token:<token> -> user id, with a TTL."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"auth:token:{token}", str(user), ex=ttl)
    finally:
        client.close()


def add_user(env: dict[str, str], user: uuid.UUID) -> None:
    """A users row (participants reference users); no usable password: tokens are minted."""
    sql(
        env["MSGSTACK_PG_DSN"],
        "INSERT INTO users (id, username, password_hash) VALUES ($1, $2, '!') "
        "ON CONFLICT DO NOTHING",
        user,
        f"user-{user}",
    )


def seed_identity(env: dict[str, str]) -> None:
    """The test user's token and its conversation (created as the owner, bypassing the API)."""
    grant_token(env["MSGSTACK_REDIS_URL"], TEST_USER, TEST_TOKEN)
    add_user(env, TEST_USER)
    sql(
        env["MSGSTACK_PG_DSN"],
        "WITH c AS (INSERT INTO conversations (id, title, created_by) VALUES ($1, 'tests', $2) "
        "ON CONFLICT DO NOTHING RETURNING id) "
        "INSERT INTO participants (conversation_id, user_id) SELECT id, $2 FROM c",
        TEST_CONVERSATION,
        TEST_USER,
    )


def bearer(redis_url: str, user: uuid.UUID | None = None, ttl: int = 600) -> dict[str, str]:
    """Authorization header of a token minted straight into Redis by the auth contract
    (``auth:token:<token>`` -> user id, msgstack/tokens.py), without the auth service."""
    token = secrets.token_urlsafe(32)
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"auth:token:{token}", str(user or uuid.uuid4()), ex=ttl)
    finally:
        client.close()
    return {"Authorization": f"Bearer {token}"}


def join_test_conversation(env: dict[str, str], prefix: str) -> None:
    """Make every seeded user `<prefix>-N` a participant of the test conversation, so messages
    they post (the default `message()`) are allowed."""
    seed_identity(env)
    sql(
        env["MSGSTACK_PG_DSN"],
        "INSERT INTO participants (conversation_id, user_id) "
        "SELECT $1, id FROM users WHERE starts_with(username, $2) ON CONFLICT DO NOTHING",
        TEST_CONVERSATION,
        f"{prefix}-",
    )


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "msgstack", "migrate"],
        check=False,
        cwd=REPO,
        timeout=60,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )


def fresh_env(postgres_server, redis_url: str, migrated: bool = True) -> dict[str, str]:
    """A new database (migrated) and unique stream/group names, so tests never share state."""
    name = f"msg_{uuid.uuid4().hex[:10]}"
    servers.create_database(postgres_server.host, postgres_server.port, name)
    env = {
        "MSGSTACK_PG_DSN": postgres_server.dsn(name),
        "MSGSTACK_REDIS_URL": redis_url,
        "MSGSTACK_STREAM": f"{name}:stream",
        "MSGSTACK_GROUP": f"{name}:group",
        "MSGSTACK_DEAD_STREAM": f"{name}:dead",
    }
    if migrated:
        done = migrate(env)
        assert done.returncode == 0, done.stderr
        seed_identity(env)
    return env


def sql(dsn: str, query: str, *args):
    """Run one query and return its rows (a fresh connection each time keeps tests independent)."""

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def payload(size: int = 2048) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def message(
    client_msg_id: str | None = None, size: int = 2048, conversation_id: uuid.UUID | None = None
) -> dict:
    return {
        "conversation_id": str(conversation_id or TEST_CONVERSATION),
        "client_msg_id": client_msg_id or uuid.uuid4().hex,
        "ciphertext": payload(size),
    }


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_env(postgres_server, redis_server) -> dict[str, str]:
    return fresh_env(postgres_server, redis_server.url)


@pytest.fixture(scope="module")
def api(api_env, tmp_path_factory) -> Iterator[Service]:
    service = start_service(
        "api", api_env, tmp_path_factory.mktemp("api"), MSGSTACK_MAX_PAYLOAD="8192"
    )
    yield service
    service.stop()


@pytest.fixture
def client(api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10, headers=AUTH) as c:
        yield c


# --- API contract -----------------------------------------------------------------------------


def test_accepted_message_is_stored_with_one_outbox_row_and_readable(client, api_env):
    body = message(size=3000)
    answer = client.post("/v1/messages", json=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "accepted"
    message_id = answer.json()["id"]
    outbox = sql(
        api_env["MSGSTACK_PG_DSN"],
        "SELECT dispatched_at FROM outbox WHERE message_id = $1",
        uuid.UUID(message_id),
    )
    assert len(outbox) == 1 and outbox[0]["dispatched_at"] is None

    read = client.get(f"/v1/messages/{message_id}")
    assert read.status_code == 200
    doc = read.json()
    assert doc["ciphertext"] == body["ciphertext"]
    assert doc["conversation_id"] == body["conversation_id"]
    assert doc["client_msg_id"] == body["client_msg_id"]
    assert doc["delivered"] is False and doc["created_at"]


def test_same_client_msg_id_returns_same_id_without_second_outbox_row(client, api_env):
    body = message()
    first = client.post("/v1/messages", json=body)
    again = client.post("/v1/messages", json={**body, "ciphertext": payload()})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    rows = sql(
        api_env["MSGSTACK_PG_DSN"],
        "SELECT count(*) AS n FROM outbox o JOIN messages m "
        "ON m.id = o.message_id WHERE m.client_msg_id = $1",
        body["client_msg_id"],
    )
    assert rows[0]["n"] == 1


@pytest.mark.parametrize(
    "body, error",
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        ({"client_msg_id": "a", "ciphertext": payload()}, "missing_field"),
        (
            {"conversation_id": "not-a-uuid", "client_msg_id": "a", "ciphertext": payload()},
            "invalid_field",
        ),
        (
            {"conversation_id": str(uuid.uuid4()), "client_msg_id": "", "ciphertext": payload()},
            "invalid_field",
        ),
        (
            {
                "conversation_id": str(uuid.uuid4()),
                "client_msg_id": "x" * 201,
                "ciphertext": payload(),
            },
            "invalid_field",
        ),
        (
            {
                "conversation_id": str(uuid.uuid4()),
                "client_msg_id": "a",
                "ciphertext": "@@not base64@@",
            },
            "invalid_field",
        ),
        (
            {"conversation_id": str(uuid.uuid4()), "client_msg_id": "a", "ciphertext": 42},
            "invalid_field",
        ),
        (
            {
                "conversation_id": str(uuid.uuid4()),
                "client_msg_id": "a",
                "ciphertext": payload(1023),
            },
            "payload_too_small",
        ),
    ],
    ids=[
        "malformed-json",
        "not-an-object",
        "missing-conversation",
        "bad-uuid",
        "empty-client-id",
        "long-client-id",
        "bad-base64",
        "ciphertext-not-string",
        "under-1KiB",
    ],
)
def test_malformed_requests_get_400_with_error_and_detail(client, body, error):
    if isinstance(body, bytes):
        answer = client.post(
            "/v1/messages", content=body, headers={"content-type": "application/json"}
        )
    else:
        answer = client.post("/v1/messages", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == error
    assert answer.json()["detail"]


def test_payload_over_limit_gets_413_and_counts_the_reject(client, api):
    before = api.metric("messaging_payload_rejects_total")
    over = client.post("/v1/messages", json=message(size=8193))  # limit set to 8192 for this API
    huge = client.post("/v1/messages", content=b"x" * 2_000_000)  # raw body over the limit
    at_limit = client.post("/v1/messages", json=message(size=8192))
    assert over.status_code == 413 and over.json()["error"] == "payload_too_large"
    assert huge.status_code == 413
    assert at_limit.status_code == 202
    assert api.metric("messaging_payload_rejects_total") == before + 2


def test_accepted_sizes_are_observed_in_the_histogram(client, api):
    before = api.metric("messaging_message_size_bytes_count")
    assert client.post("/v1/messages", json=message(size=5000)).status_code == 202
    assert api.metric("messaging_message_size_bytes_count") == before + 1
    assert api.metric("messaging_message_size_bytes_bucket", le="4096.0") < api.metric(
        "messaging_message_size_bytes_bucket", le="8192.0"
    )


def test_unknown_or_malformed_message_id_gets_404(client):
    assert client.get(f"/v1/messages/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/messages/nope").json()["error"] == "not_found"


def test_health_and_readiness_report_each_dependency(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


# --- PostgreSQL outage ------------------------------------------------------------------------


def test_api_answers_503_while_postgres_is_down_and_recovers_by_itself(redis_server, tmp_path):
    port = servers.free_port()
    data = tmp_path / "pg"
    pg = servers.start_postgres(port, data)
    try:
        servers.create_database("127.0.0.1", port, "outage")
        env = {
            "MSGSTACK_PG_DSN": f"postgresql://postgres@127.0.0.1:{port}/outage",
            "MSGSTACK_REDIS_URL": redis_server.url,
        }
        assert migrate(env).returncode == 0
        seed_identity(env)
        service = start_service("api", env, tmp_path)
        try:
            with httpx.Client(base_url=service.url, timeout=10, headers=AUTH) as c:
                assert c.post("/v1/messages", json=message()).status_code == 202
                pg.send_signal(signal.SIGINT)
                pg.wait(15)
                down = c.post("/v1/messages", json=message())
                assert down.status_code == 503 and down.json()["error"] == "unavailable"
                ready = c.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["checks"]["postgres"] != "ok"
                assert ready.json()["checks"]["redis"] == "ok"

                pg = servers.start_postgres(port, data)
                wait_until(
                    lambda: c.post("/v1/messages", json=message()).status_code == 202,
                    15,
                    "the API to accept messages again",
                )
                assert c.get("/readyz").status_code == 200
            assert service.proc.poll() is None
            assert "Traceback" not in service.log_text()
        finally:
            service.stop()
    finally:
        if pg.poll() is None:
            pg.send_signal(signal.SIGINT)
            pg.wait(15)


def test_missing_schema_gets_503_naming_the_migrate_command(
    postgres_server, redis_server, tmp_path
):
    env = fresh_env(postgres_server, redis_server.url, migrated=False)
    service = start_service("api", env, tmp_path)
    try:
        grant_token(env["MSGSTACK_REDIS_URL"], TEST_USER, TEST_TOKEN)
        answer = httpx.post(f"{service.url}/v1/messages", json=message(), timeout=10, headers=AUTH)
        assert answer.status_code == 503
        assert "msgstack migrate" in answer.json()["detail"]
    finally:
        service.stop()


# --- migrations -------------------------------------------------------------------------------


def test_migrations_apply_in_order_once_even_when_run_concurrently(postgres_server, redis_server):
    env = fresh_env(postgres_server, redis_server.url, migrated=False)
    cmd = [sys.executable, "-m", "msgstack", "migrate"]
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    versions = [
        r["version"]
        for r in sql(
            env["MSGSTACK_PG_DSN"], "SELECT version FROM schema_migrations ORDER BY version"
        )
    ]
    # every regular migration, in file-name order (online ones run only when asked)
    assert versions == sorted(p.stem for p in (REPO / "msgstack" / "migrations").glob("*.sql"))
    assert versions[:4] == [
        "0001_initial",
        "0002_conversation_timeline",
        "0003_users",
        "0004_conversations",
    ]
    assert sum("applying 0001_initial" in out for out in outputs) == 1
    again = migrate(env)
    assert again.returncode == 0 and "up to date" in again.stderr
    index = sql(
        env["MSGSTACK_PG_DSN"],
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON "
        "c.oid = i.indexrelid WHERE c.relname = 'messages_conversation_created_idx'",
    )
    assert index and index[0]["indisvalid"]


def test_missing_configuration_fails_with_the_variable_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGSTACK_")}
    done = subprocess.run(
        [sys.executable, "-m", "msgstack", "api"],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "MSGSTACK_PORT" in done.stderr or "MSGSTACK_PG_DSN" in done.stderr

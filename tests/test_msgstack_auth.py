"""The auth service and the bearer-token contract: login (argon2id, off the event loop), tokens in
Redis with a TTL, the API's 401s, seeding users, and behaviour while PostgreSQL or Redis is down.

Real processes (`python -m msgstack auth|api|seed-users`) against private servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from test_msgstack_api import (
    REPO,
    Service,
    fresh_env,
    join_test_conversation,
    message,
    migrate,
    start_service,
    wait_until,
)

from chaosmessaging.stack import servers

PASSWORD = "correct horse battery staple"
SEED_ENV = "TEST_SEED_PASSWORD"


def seed(env: dict[str, str], count: int, prefix: str = "user", password: str = PASSWORD):
    return subprocess.run(
        [sys.executable, "-m", "msgstack", "seed-users", "--count", str(count), "--prefix",
         prefix, "--password-env", SEED_ENV],
        cwd=REPO, env={**os.environ, **env, SEED_ENV: password}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def login(service: Service, username: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{service.url}/v1/auth/login", json={"username": username, "password": password},
        timeout=15,
    )  # fmt: skip


@pytest.fixture(scope="module")
def env(postgres_server, redis_server) -> dict[str, str]:
    env = fresh_env(postgres_server, redis_server.url)
    done = seed(env, 3)
    assert done.returncode == 0, done.stderr
    join_test_conversation(env, "user")
    return env


@pytest.fixture(scope="module")
def auth(env, tmp_path_factory) -> Iterator[Service]:
    service = start_service(
        "auth", env, tmp_path_factory.mktemp("auth"), MSGSTACK_AUTH_TOKEN_TTL="120"
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def api(env, tmp_path_factory) -> Iterator[Service]:
    service = start_service("api", env, tmp_path_factory.mktemp("api"))
    yield service
    service.stop()


# --- login ------------------------------------------------------------------------------------


def test_login_issues_an_opaque_token_stored_in_redis_with_the_ttl(auth, env):
    answer = login(auth, "user-0")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 120
    assert answer.headers["cache-control"] == "no-store"
    r = redis.Redis.from_url(env["MSGSTACK_REDIS_URL"], decode_responses=True)
    try:
        assert r.get(f"auth:token:{body['token']}") == body["user_id"]
        assert 100 < r.ttl(f"auth:token:{body['token']}") <= 120
    finally:
        r.close()
    assert uuid.UUID(body["user_id"])
    assert login(auth, "user-0").json()["token"] != body["token"]  # every login: a new token


def test_wrong_password_and_unknown_user_get_the_same_401(auth):
    wrong = login(auth, "user-1", "not the password")
    unknown = login(auth, "nobody-here", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "invalid_credentials",
            "detail": "username or password is incorrect",
        }
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"password": "x"}',
        b'{"username": "user-0"}',
        b'{"username": "", "password": "x"}',
        b'{"username": 7, "password": "x"}',
        b'{"username": "user-0", "password": ["x"]}',
        b'{"username": "user-0", "password": "' + b"x" * 5000 + b'"}',
    ],
    ids=["bad-json", "not-object", "no-username", "no-password", "empty-username",
         "username-not-string", "password-not-string", "body-too-large"],
)  # fmt: skip
def test_malformed_login_gets_400_with_error_and_detail(auth, body):
    answer = httpx.post(
        f"{auth.url}/v1/auth/login", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad_request" and answer.json()["detail"]


def test_login_metrics_count_attempts_successes_and_time_token_generation(auth):
    before = {
        name: auth.metric(name)
        for name in ("auth_login_attempts_total", "auth_login_success_total",
                     "auth_token_generation_latency_count")
    }  # fmt: skip
    assert login(auth, "user-2").status_code == 200
    assert login(auth, "user-2", "wrong").status_code == 401
    assert auth.metric("auth_login_attempts_total") == before["auth_login_attempts_total"] + 2
    assert auth.metric("auth_login_success_total") == before["auth_login_success_total"] + 1
    assert (
        auth.metric("auth_token_generation_latency_count")
        == before["auth_token_generation_latency_count"] + 1
    )
    assert auth.metric("auth_login_failures_total", reason="invalid_credentials") >= 1
    assert 0 < auth.metric("auth_login_success_rate") < 1
    assert auth.metric("redis_pool_max_connections") == 50
    assert auth.metric("redis_pool_in_use_connections") >= 0


def test_password_verification_runs_off_the_event_loop(auth):
    """While a burst of logins keeps the KDF busy, /healthz (served by the event loop) still
    answers quickly: verification happens in the thread pool."""
    with ThreadPoolExecutor(8) as pool:
        burst = [pool.submit(login, auth, "user-0", "wrong") for _ in range(16)]
        time.sleep(0.05)
        started = time.monotonic()
        assert httpx.get(f"{auth.url}/healthz", timeout=5).status_code == 200
        healthz = time.monotonic() - started
        results = [f.result() for f in burst]
    assert all(r.status_code == 401 for r in results)
    verify_sum = auth.metric("auth_password_verify_seconds_sum")
    verify_count = auth.metric("auth_password_verify_seconds_count")
    # 16 verifications queued behind each other take 16 x one verification; /healthz must not wait
    assert healthz < 4 * (verify_sum / verify_count) + 0.25, (healthz, verify_sum / verify_count)


# --- the API's side of the contract -----------------------------------------------------------


def test_api_refuses_requests_without_a_valid_token_but_serves_health_and_metrics(api):
    bad = [
        httpx.post(f"{api.url}/v1/messages", json=message()),
        httpx.get(f"{api.url}/v1/messages/{uuid.uuid4()}"),
        httpx.post(f"{api.url}/v1/messages", json=message(), headers={"Authorization": "Basic x"}),
        httpx.post(
            f"{api.url}/v1/messages", json=message(),
            headers={"Authorization": "Bearer " + "A" * 43},
        ),
        httpx.post(f"{api.url}/v1/messages", json=message(), headers={"Authorization": "Bearer"}),
    ]  # fmt: skip
    for answer in bad:
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "unauthorized" and answer.json()["detail"]
        assert answer.headers["www-authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{api.url}{path}").status_code == 200
    assert api.metric("messaging_api_unauthorized_total", reason="missing") >= 4
    assert api.metric("messaging_api_unauthorized_total", reason="invalid") >= 1


def test_a_token_from_login_is_accepted_by_the_api_until_it_expires(auth, api, env):
    token = login(auth, "user-1").json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{api.url}/v1/messages", json=message(), headers=headers).status_code == 202
    r = redis.Redis.from_url(env["MSGSTACK_REDIS_URL"])
    try:
        r.pexpire(f"auth:token:{token}", 1)  # what the TTL does, without waiting two minutes
        time.sleep(0.05)
    finally:
        r.close()
    expired = httpx.post(f"{api.url}/v1/messages", json=message(), headers=headers)
    assert expired.status_code == 401


# --- seeding ----------------------------------------------------------------------------------


def test_seed_users_is_idempotent_converges_on_the_password_and_never_prints_it(env, auth):
    again = seed(env, 3)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 re-hashed, 3 unchanged" in again.stdout
    changed = seed(env, 4, password="another password")
    assert changed.returncode == 0, changed.stderr
    assert "1 created, 3 re-hashed, 0 unchanged" in changed.stdout
    for output in (again, changed):
        assert PASSWORD not in output.stdout + output.stderr
        assert "another password" not in output.stdout + output.stderr
    assert login(auth, "user-3", "another password").status_code == 200
    assert login(auth, "user-0", PASSWORD).status_code == 401
    restored = seed(env, 4)
    assert "0 created, 4 re-hashed" in restored.stdout
    assert login(auth, "user-0").status_code == 200


def test_seed_users_refuses_a_missing_password_variable(env):
    done = subprocess.run(
        [sys.executable, "-m", "msgstack", "seed-users", "--count", "2", "--password-env",
         "SURELY_UNSET_VARIABLE"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "SURELY_UNSET_VARIABLE" in done.stderr


# --- outages ----------------------------------------------------------------------------------


def test_postgres_down_login_answers_503_while_issued_tokens_keep_working(redis_server, tmp_path):
    port = servers.free_port()
    data = tmp_path / "pg"
    pg = servers.start_postgres(port, data)
    try:
        servers.create_database("127.0.0.1", port, "authoutage")
        env = {
            "MSGSTACK_PG_DSN": f"postgresql://postgres@127.0.0.1:{port}/authoutage",
            "MSGSTACK_REDIS_URL": redis_server.url,
        }
        assert migrate(env).returncode == 0
        assert seed(env, 1).returncode == 0
        join_test_conversation(env, "user")
        auth = start_service("auth", env, tmp_path)
        api = start_service("api", env, tmp_path)
        try:
            token = login(auth, "user-0").json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            pg.send_signal(signal.SIGINT)
            pg.wait(15)
            down = login(auth, "user-0")
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "unavailable" and "postgres" in down.json()["detail"]
            ready = httpx.get(f"{auth.url}/readyz", timeout=5).json()
            assert ready["status"] == "degraded" and ready["checks"]["redis"] == "ok"
            assert ready["checks"]["postgres"] != "ok"
            # the token still authenticates: the API answers 503 for PostgreSQL, not 401
            during = httpx.post(f"{api.url}/v1/messages", json=message(), headers=headers)
            assert during.status_code == 503, during.text
            pg = servers.start_postgres(port, data)
            wait_until(lambda: login(auth, "user-0").status_code == 200, 20, "login to work again")
            after = httpx.post(f"{api.url}/v1/messages", json=message(), headers=headers)
            assert after.status_code == 202
            for service in (auth, api):
                assert service.proc.poll() is None
                assert "Traceback" not in service.log_text()
        finally:
            auth.stop()
            api.stop()
    finally:
        if pg.poll() is None:
            pg.send_signal(signal.SIGINT)
            pg.wait(15)


def test_redis_down_login_503_api_keeps_known_tokens_and_all_are_gone_when_it_returns_empty(
    postgres_server, tmp_path
):
    port = servers.free_port()
    data = tmp_path / "redis"
    rd = servers.start_redis(port, data)
    try:
        env = fresh_env(postgres_server, f"redis://127.0.0.1:{port}/0")
        assert seed(env, 1).returncode == 0
        join_test_conversation(env, "user")
        auth = start_service("auth", env, tmp_path)
        api = start_service("api", env, tmp_path)
        try:
            token = login(auth, "user-0").json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            seen = {"Authorization": f"Bearer {login(auth, 'user-0').json()['token']}"}
            assert httpx.post(f"{api.url}/v1/messages", json=message(), headers=seen).is_success
            rd.kill()
            rd.wait(10)
            assert login(auth, "user-0").status_code == 503
            # a token the API never saw cannot be checked: 503, not 401 and not 500
            during = httpx.post(f"{api.url}/v1/messages", json=message(), headers=headers)
            assert during.status_code == 503 and during.json()["error"] == "unavailable"
            # one it resolved before keeps working until its TTL: messages still come in
            kept = httpx.post(f"{api.url}/v1/messages", json=message(), headers=seen)
            assert kept.status_code == 202, kept.text
            assert api.metric("messaging_api_tokens_remembered_total") >= 1
            rd = servers.start_redis(port, data)  # no persistence: comes back empty
            wait_until(lambda: httpx.get(f"{api.url}/readyz").status_code == 200, 20, "API ready")
            for old in (headers, seen):  # within a second of Redis answering again: log in again
                wait_until(
                    lambda h=old: (
                        httpx.post(f"{api.url}/v1/messages", json=message(), headers=h).status_code
                        == 401
                    ),
                    5,
                    "401 for a token Redis lost",
                )
            fresh = {"Authorization": f"Bearer {login(auth, 'user-0').json()['token']}"}
            # every API worker process finds Redis back (one may answer 503 once on a
            # connection that died with the restart)
            wait_until(
                lambda: httpx.post(
                    f"{api.url}/v1/messages", json=message(), headers=fresh
                ).status_code == 202,
                5,
                "a fresh login's token accepted by the API",
            )  # fmt: skip
            for service in (auth, api):
                assert service.proc.poll() is None
                assert "Traceback" not in service.log_text()
        finally:
            auth.stop()
            api.stop()
    finally:
        if rd.poll() is None:
            rd.kill()
            rd.wait(10)


def test_the_token_cache_lets_a_logout_or_expiry_take_effect_within_its_bound(
    auth, env, tmp_path_factory
):
    """MSGSTACK_AUTH_TOKEN_CACHE_MS: a token checked moments ago is accepted without asking Redis
    (served from the cache right after its key went), and every request later than the bound
    after the key was deleted (logout) or expired is refused."""
    bound = 0.7
    api = start_service(
        "api", env, tmp_path_factory.mktemp("api-token-cache"), MSGSTACK_AUTH_TOKEN_CACHE_MS="700"
    )
    r = redis.Redis.from_url(env["MSGSTACK_REDIS_URL"])
    try:
        for revoke in ("logout", "expiry"):
            token = login(auth, "user-2").json()["token"]
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
                post = lambda: client.post(f"{api.url}/v1/messages", json=message())  # noqa: E731
                assert post().status_code == 202
                if revoke == "logout":
                    r.delete(f"auth:token:{token}")
                else:
                    r.pexpire(f"auth:token:{token}", 1)
                revoked = time.monotonic()
                assert post().status_code == 202  # the same worker, within the bound: cached
                seen = []
                while time.monotonic() - revoked < bound + 1.0:
                    sent = time.monotonic() - revoked
                    seen.append((sent, post().status_code))
                    time.sleep(0.05)
            assert {status for _, status in seen} <= {202, 401}, seen
            late = [status for at, status in seen if at >= bound]
            assert late and set(late) == {401}, (revoke, seen)
    finally:
        r.close()
        api.stop()

"""The conversations/participants API contract, its authorization and the participant cache.

Real processes: the API runs with two uvicorn workers (its default), so a participant removal
acknowledged by one worker must stop the other one too; `X-Served-By` names the answering pid.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from chaosmessaging.stack import servers
from test_msgstack_api import (
    Service,
    add_user,
    fresh_env,
    grant_token,
    message,
    start_service,
    wait_until,
)


class User:
    def __init__(self, env: dict[str, str], name: str) -> None:
        self.id = uuid.uuid4()
        self.token = f"token-{name}-{uuid.uuid4().hex}"
        grant_token(env["MSGSTACK_REDIS_URL"], self.id, self.token)
        add_user(env, self.id)
        self.headers = {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def env(postgres_server, redis_server) -> dict[str, str]:
    return fresh_env(postgres_server, redis_server.url)


@pytest.fixture(scope="module")
def api(env, tmp_path_factory) -> Iterator[Service]:
    service = start_service(
        "api", env, tmp_path_factory.mktemp("conv-api"), MSGSTACK_PARTICIPANT_CHANNEL="conv-test"
    )
    yield service
    service.stop()


@pytest.fixture
def alice(env) -> User:
    return User(env, "alice")


@pytest.fixture
def bob(env) -> User:
    return User(env, "bob")


def call(api: Service, user: User | None, method: str, path: str, **kw) -> httpx.Response:
    """One request on a fresh connection (so consecutive calls may reach either worker)."""
    headers = user.headers if user else {}
    return httpx.request(method, f"{api.url}{path}", headers=headers, timeout=10, **kw)


def create(api: Service, user: User, **body) -> dict:
    answer = call(api, user, "POST", "/v1/conversations", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


# --- authentication ------------------------------------------------------------------------------


def test_every_api_endpoint_needs_a_valid_token_but_health_does_not(api):
    for method, path in [
        ("GET", "/v1/conversations"),
        ("POST", "/v1/conversations"),
        ("GET", f"/v1/conversations/{uuid.uuid4()}"),
        ("POST", "/v1/messages"),
    ]:
        answer = call(api, None, method, path)
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    wrong = httpx.get(
        f"{api.url}/v1/conversations", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401 and wrong.json()["detail"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{api.url}{path}", timeout=10).status_code == 200


# --- CRUD ----------------------------------------------------------------------------------------


def test_create_makes_the_creator_a_participant_and_get_returns_it(api, alice, bob):
    conv = create(api, alice, title="plans", metadata={"topic": "x"}, participants=[str(bob.id)])
    assert conv["version"] == 1 and conv["created_by"] == str(alice.id)
    assert set(conv["participants"]) == {str(alice.id), str(bob.id)}
    got = call(api, bob, "GET", f"/v1/conversations/{conv['id']}")
    assert got.status_code == 200 and got.json()["metadata"] == {"topic": "x"}


def test_list_mine_is_paginated_by_cursor_and_shows_only_mine(api, alice, bob):
    mine = {create(api, alice, title=f"a{i}")["id"] for i in range(5)}
    create(api, bob, title="not alice's")
    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = call(api, alice, "GET", "/v1/conversations", params=params).json()
        assert len(page["conversations"]) <= 2
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(seen) == mine and len(seen) == 5


def test_update_with_the_current_version_bumps_it_and_a_stale_one_gets_409(api, alice):
    conv = create(api, alice, title="v")
    path = f"/v1/conversations/{conv['id']}"
    before = api.metric("messaging_conversation_version_conflicts_total")
    first = call(api, alice, "PATCH", path, json={"version": 1, "metadata": {"n": 1}})
    assert first.status_code == 200 and first.json()["version"] == 2
    stale = call(api, alice, "PATCH", path, json={"version": 1, "title": "late"})
    assert stale.status_code == 409
    assert stale.json()["error"] == "version_conflict" and stale.json()["current_version"] == 2
    assert api.metric("messaging_conversation_version_conflicts_total") == before + 1
    assert call(api, alice, "GET", path).json()["metadata"] == {"n": 1}


def test_delete_removes_the_conversation(api, alice):
    conv = create(api, alice)
    path = f"/v1/conversations/{conv['id']}"
    assert call(api, alice, "DELETE", path).status_code == 204
    assert call(api, alice, "GET", path).status_code == 404


# --- authorization -------------------------------------------------------------------------------


def test_non_participant_gets_403_on_every_operation_and_the_denials_are_counted(api, alice, bob):
    conv = create(api, alice)
    path = f"/v1/conversations/{conv['id']}"
    before = api.metric("sanctum_security_denied_total", operation="get")
    attempts = [
        call(api, bob, "GET", path),
        call(api, bob, "PATCH", path, json={"version": 1, "title": "mine now"}),
        call(api, bob, "DELETE", path),
        call(api, bob, "GET", f"{path}/participants"),
        call(api, bob, "POST", f"{path}/participants", json={"user_id": str(bob.id)}),
        call(api, bob, "DELETE", f"{path}/participants/{alice.id}"),
        call(api, bob, "POST", "/v1/messages", json=message(conversation_id=conv["id"])),
    ]
    assert [a.status_code for a in attempts] == [403] * len(attempts), [a.text for a in attempts]
    assert all(a.json()["error"] == "forbidden" for a in attempts)
    assert api.metric("sanctum_security_denied_total", operation="get") == before + 1
    assert call(api, alice, "GET", path).json()["version"] == 1  # nothing changed
    assert str(bob.id) not in call(api, alice, "GET", f"{path}/participants").text


def test_participants_post_messages_and_a_removed_one_cannot(api, alice, bob):
    conv = create(api, alice)
    path = f"/v1/conversations/{conv['id']}"
    added = call(api, alice, "POST", f"{path}/participants", json={"user_id": str(bob.id)})
    assert added.status_code == 201 and added.json()["added"] is True
    again = call(api, alice, "POST", f"{path}/participants", json={"user_id": str(bob.id)})
    assert again.status_code == 200 and again.json()["added"] is False
    body = message(conversation_id=conv["id"])
    assert call(api, bob, "POST", "/v1/messages", json=body).status_code == 202
    removed = call(api, alice, "DELETE", f"{path}/participants/{bob.id}")
    assert removed.status_code == 200 and removed.json()["removed"] is True
    assert call(api, alice, "DELETE", f"{path}/participants/{bob.id}").status_code == 404
    assert (
        call(api, bob, "POST", "/v1/messages", json=message(conversation_id=conv["id"])).status_code
        == 403
    )


def test_unknown_conversation_gets_404_not_403(api, alice):
    for method in ("GET", "DELETE"):
        answer = call(api, alice, method, f"/v1/conversations/{uuid.uuid4()}")
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert call(api, alice, "GET", "/v1/conversations/not-a-uuid").status_code == 404
    unknown = message(conversation_id=uuid.uuid4())
    assert call(api, alice, "POST", "/v1/messages", json=unknown).status_code == 404


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body, status, error",
    [
        ("POST", "", b"{nope", 400, "invalid_json"),
        ("POST", "", b"[]", 400, "invalid_json"),
        ("POST", "", {"title": 5}, 400, "invalid_field"),
        ("POST", "", {"title": "t" * 201}, 400, "invalid_field"),
        ("POST", "", {"metadata": [1]}, 400, "invalid_field"),
        ("POST", "", {"metadata": {"k": "v" * 20000}}, 400, "invalid_field"),
        ("POST", "", {"participants": "bob"}, 400, "invalid_field"),
        ("POST", "", {"participants": ["not-a-uuid"]}, 400, "invalid_field"),
        ("POST", "", b"x" * 70000, 413, "payload_too_large"),
        ("PATCH", "/{id}", {"title": "no version"}, 400, "invalid_field"),
        ("PATCH", "/{id}", {"version": "1", "title": "t"}, 400, "invalid_field"),
        ("PATCH", "/{id}", {"version": 0, "title": "t"}, 400, "invalid_field"),
        ("PATCH", "/{id}", {"version": 1}, 400, "missing_field"),
        ("POST", "/{id}/participants", {}, 400, "missing_field"),
        ("POST", "/{id}/participants", {"user_id": 7}, 400, "invalid_field"),
        ("GET", "?limit=0", None, 400, "invalid_query"),
        ("GET", "?limit=101", None, 400, "invalid_query"),
        ("GET", "?limit=x", None, 400, "invalid_query"),
        ("GET", "?cursor=garbage", None, 400, "invalid_query"),
    ],
)
def test_bad_input_gets_a_4xx_json_error_with_detail(api, alice, method, path, body, status, error):
    conv = create(api, alice)
    url = "/v1/conversations" + path.replace("{id}", conv["id"])
    kw = (
        {"content": body}
        if isinstance(body, bytes)
        else ({"json": body} if body is not None else {})
    )
    answer = call(api, alice, method, url, **kw)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error and answer.json()["detail"]


# --- participant cache ---------------------------------------------------------------------------


def read_on_every_worker(api: Service, user: User, path: str, want: int, workers: int = 2):
    """Read until `workers` distinct pids answered `want`; return {pid: last response}."""
    answers: dict[str, httpx.Response] = {}

    def enough():
        answer = call(api, user, "GET", path)
        if answer.status_code == want:
            answers[answer.headers["x-served-by"]] = answer
        return len(answers) >= workers

    wait_until(enough, 20, f"{workers} workers answering {want} on {path}", interval=0.01)
    return answers


def test_cache_hits_are_counted_and_marked_on_the_response(api, alice):
    conv = create(api, alice)
    path = f"/v1/conversations/{conv['id']}/participants"
    hits, misses = (
        api.metric("messaging_participant_cache_hits_total"),
        api.metric("messaging_participant_cache_misses_total"),
    )
    answers = [call(api, alice, "GET", path) for _ in range(20)]
    assert all(a.status_code == 200 for a in answers)
    marks = [a.headers["x-participant-cache"] for a in answers]
    assert marks.count("hit") >= 17  # at most one miss per worker (two workers)
    # metrics are the sum over both workers (multiprocess mode), whichever worker is scraped
    assert api.metric("messaging_participant_cache_hits_total") == hits + marks.count("hit")
    assert api.metric("messaging_participant_cache_misses_total") == misses + marks.count("miss")


def test_a_removal_reaches_every_worker_before_the_next_read(api, alice, bob):
    conv = create(api, alice, participants=[str(bob.id)])
    path = f"/v1/conversations/{conv['id']}/participants"
    cached = read_on_every_worker(api, bob, path, 200)
    assert len(cached) == 2
    delays = api.metric("messaging_participant_invalidation_delay_seconds_count")
    removed = call(api, alice, "DELETE", f"{path}/{bob.id}")
    assert removed.status_code == 200
    time.sleep(0.1)  # the invalidation delay budget of the plan (T3)
    after = [call(api, bob, "GET", path) for _ in range(30)]
    served = {a.headers["x-served-by"] for a in after}
    assert [a.status_code for a in after] == [403] * 30 and len(served) == 2
    # both workers applied the announcement (the writer too, through its own subscription)
    assert api.metric("messaging_participant_invalidation_delay_seconds_count") >= delays + 2


def test_without_invalidation_a_removed_user_keeps_reading_from_a_stale_cache(
    env, alice, bob, tmp_path
):
    """Mutant participants_no_invalidation: the stale read T3 must catch."""
    api = start_service(
        "api",
        env,
        tmp_path,
        MSGSTACK_MUTANT="participants_no_invalidation",
        MSGSTACK_PARTICIPANT_CHANNEL="conv-test-off",
    )
    try:
        conv = create(api, alice, participants=[str(bob.id)])
        path = f"/v1/conversations/{conv['id']}/participants"
        read_on_every_worker(api, bob, path, 200)
        assert call(api, alice, "DELETE", f"{path}/{bob.id}").status_code == 200
        time.sleep(0.1)
        stale = [call(api, bob, "GET", path) for _ in range(10)]
        assert any(a.status_code == 200 for a in stale)
    finally:
        api.stop()


def test_process_metrics_cover_the_supervisor_and_both_workers(api):
    import psutil

    family = [psutil.Process(api.proc.pid), *psutil.Process(api.proc.pid).children(recursive=True)]
    workers = {p.pid for p in family[1:]}
    served = {call(api, None, "GET", "/healthz").headers["x-served-by"] for _ in range(30)}
    assert {int(pid) for pid in served} <= workers and len(served) == 2
    rss = api.metric("process_resident_memory_bytes")
    own = sum(p.memory_info().rss for p in family)
    assert 0.8 * own < rss < 1.2 * own  # the whole service, not the scraped worker alone


def test_with_redis_down_workers_bypass_their_caches_and_a_removal_still_holds(
    postgres_server, tmp_path
):
    """No invalidation can be announced while Redis is down: each worker notices its dead
    subscription, empties its cache and asks PostgreSQL, so the removed user is refused."""
    from test_msgstack_pipeline import PrivateRedis

    redis_server = PrivateRedis(servers.free_port(), tmp_path / "redis", None)
    redis_server.start()
    env = fresh_env(postgres_server, redis_server.url)
    api = start_service("api", env, tmp_path)
    try:
        alice, bob = User(env, "alice"), User(env, "bob")
        conv = create(api, alice, participants=[str(bob.id)])
        path = f"/v1/conversations/{conv['id']}/participants"
        read_on_every_worker(api, alice, path, 200)  # both workers know both tokens ...
        read_on_every_worker(api, bob, path, 200)  # ... and cached the participants
        redis_server.stop()
        assert call(api, alice, "DELETE", f"{path}/{bob.id}").status_code == 200
        wait_until(
            lambda: all(call(api, bob, "GET", path).status_code == 403 for _ in range(10)),
            5,
            "every worker to refuse bob once its subscription is found dead",
        )
        after = [call(api, bob, "GET", path) for _ in range(30)]
        assert [a.status_code for a in after] == [403] * 30
        assert len({a.headers["x-served-by"] for a in after}) == 2
    finally:
        api.stop()
        redis_server.stop()


def test_a_token_one_worker_resolved_is_honoured_by_both_while_redis_is_down(
    postgres_server, tmp_path
):
    from test_msgstack_pipeline import PrivateRedis

    redis_server = PrivateRedis(servers.free_port(), tmp_path / "redis", None)
    redis_server.start()
    env = fresh_env(postgres_server, redis_server.url)
    api = start_service("api", env, tmp_path)
    try:
        alice = User(env, "alice")
        first = call(api, alice, "GET", "/v1/conversations")  # resolved by one worker only
        assert first.status_code == 200
        redis_server.stop()
        answers = {}
        for _ in range(40):
            answer = call(api, alice, "GET", "/v1/conversations")
            answers.setdefault(answer.headers["x-served-by"], set()).add(answer.status_code)
        assert len(answers) == 2 and all(codes == {200} for codes in answers.values()), answers
    finally:
        api.stop()
        redis_server.stop()

"""The platform file: schema errors name the field, ${VAR:-default} interpolation, secrets kept
out of what is written for k6, the shipped reference platform, operations rendered as requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chaosmessaging.platform import PlatformError, load_platform, platform_path, public_document
from chaosmessaging.platform.templates import extract, find_all, render, render_request
from chaosmessaging.resources import bundled

REFERENCE = bundled("platforms") / "reference.yaml"


def _write(tmp_path: Path, doc: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _reference_doc() -> dict:
    return yaml.safe_load(REFERENCE.read_text())


def test_the_shipped_reference_platform_is_the_default_and_valid(monkeypatch):
    monkeypatch.delenv("CHAOSMESSAGING_PLATFORM", raising=False)
    assert platform_path() == REFERENCE
    platform = load_platform()
    assert platform.name == "reference"
    assert platform.delivery.type == "websocket"
    assert platform.delivery.websocket.frame.id == "$.message_id"
    assert platform.conversations.update.conflict == [409]
    assert platform.evidence.sql is not None
    assert platform.metric("messaging_consumer_pel_size") == "messaging_consumer_pel_size"
    assert platform.metric("no_such_role") is None


def test_the_platform_file_is_chosen_by_configuration_then_environment(tmp_path, monkeypatch):
    mine = _write(tmp_path, _reference_doc())
    monkeypatch.setenv("CHAOSMESSAGING_PLATFORM", str(mine))
    assert platform_path() == mine
    other = tmp_path / "other.yaml"
    assert platform_path({"platform": str(other)}) == other


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda d: d["conversations"]["create"].__setitem__("ok", ["created"]),
            "conversations.create.ok.0",
        ),
        (lambda d: d["send"].__setitem__("methd", "POST"), "send.methd"),
        (lambda d: d["login"].pop("token"), "login.token"),
        (lambda d: d["login"].__setitem__("token", "token"), "login.token"),
        (lambda d: d["services"]["api"].__setitem__("url", "127.0.0.1:8080"), "services.api.url"),
        (lambda d: d["delivery"].__setitem__("type", "sse"), "delivery"),
        (
            lambda d: d["conversations"]["get"].__setitem__("service", "nope"),
            "conversations.get.service",
        ),
        (
            lambda d: d["delivery"]["websocket"]["frame"].pop("payload"),
            "delivery.websocket.frame.payload",
        ),
        (lambda d: d["evidence"].__setitem__("hook", "mod:fn"), "evidence"),
    ],
)
def test_a_schema_error_names_the_field(tmp_path, change, field):
    doc = _reference_doc()
    change(doc)
    with pytest.raises(PlatformError) as caught:
        load_platform(_write(tmp_path, doc))
    errors = caught.value.errors
    assert any(line.startswith(f"{field}:") or f"{field}:" in line for line in errors), errors
    assert str(_write(tmp_path, doc)) in str(caught.value)


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PlatformError, match="line 2, column 1: not valid YAML"):
        load_platform(bad)
    bad.write_text("- a list\n")
    with pytest.raises(PlatformError, match="must hold a mapping"):
        load_platform(bad)
    with pytest.raises(PlatformError, match="cannot read it"):
        load_platform(tmp_path / "missing.yaml")


def test_interpolation_uses_the_variable_then_its_default_and_names_an_unset_one(
    tmp_path, monkeypatch
):
    doc = _reference_doc()
    doc["services"]["api"]["url"] = "${MY_PLATFORM_API:-http://127.0.0.1:9999}"
    doc["services"]["auth"]["url"] = "https://${MY_AUTH_HOST}/base"
    path = _write(tmp_path, doc)
    monkeypatch.delenv("MY_AUTH_HOST", raising=False)
    with pytest.raises(PlatformError) as caught:
        load_platform(path)
    assert caught.value.errors == [
        "services.auth.url: ${MY_AUTH_HOST} is not set and has no default"
    ]
    monkeypatch.setenv("MY_AUTH_HOST", "auth.example")
    monkeypatch.delenv("MY_PLATFORM_API", raising=False)
    platform = load_platform(path)
    assert platform.services["api"].url == "http://127.0.0.1:9999"
    assert platform.services["auth"].url == "https://auth.example/base"
    monkeypatch.setenv("MY_PLATFORM_API", "http://10.1.2.3:80/")
    assert load_platform(path).services["api"].url == "http://10.1.2.3:80"


def test_a_known_key_resolves_like_every_activity_configuration_first(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_API_URL", "http://127.0.0.1:7001")
    platform = load_platform(
        REFERENCE, configuration={"messaging_api_url": "http://127.0.0.1:7002"}
    )
    assert platform.services["api"].url == "http://127.0.0.1:7002"
    assert load_platform(REFERENCE).services["api"].url == "http://127.0.0.1:7001"


def test_secrets_resolve_in_memory_but_never_reach_the_written_document(tmp_path, monkeypatch):
    doc = _reference_doc()
    doc["send"]["headers"] = {"X-Api-Key": "${MY_API_KEY}"}
    path = _write(tmp_path, doc)
    monkeypatch.setenv("MY_API_KEY", "s3cr3t-value")
    platform = load_platform(path)
    assert platform.send.headers == {"X-Api-Key": "s3cr3t-value"}
    public = public_document(path)
    assert public["send"]["headers"] == {"X-Api-Key": "${MY_API_KEY}"}
    assert "s3cr3t-value" not in json.dumps(public)
    monkeypatch.delenv("MY_API_KEY")
    with pytest.raises(PlatformError, match=r"send.headers.X-Api-Key: \$\{MY_API_KEY\} is not set"):
        public_document(path)


def test_an_operation_renders_as_a_request_and_its_reply_is_read_by_jsonpath():
    platform = load_platform(
        REFERENCE, configuration={"messaging_api_url": "http://127.0.0.1:7000"}
    )
    request = render_request(
        platform,
        platform.conversations.update,
        {"conversation_id": "a/b", "version": 3, "title": "t"},
        token="tok",
    )
    assert request.method == "PATCH"
    assert request.url == "http://127.0.0.1:7000/v1/conversations/a%2Fb"
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.json == {"version": 3, "title": "t"}  # a whole placeholder keeps its type
    assert extract(platform.conversations.create, {"id": "c1", "version": 1}) == {
        "id": "c1",
        "version": 1,
    }
    assert find_all("$.conversations[*].id", {"conversations": [{"id": 1}, {"id": 2}]}) == [1, 2]
    with pytest.raises(KeyError, match=r"body.title: no value for placeholder \{title\}"):
        render({"title": "{title}"}, {}, "body")


def test_a_broken_platform_file_is_a_configuration_error_before_anything_runs(tmp_path):
    """The standard control's validation names the platform file's field (nothing started)."""
    from chaosmessaging.controls.validation import configuration_errors

    doc = _reference_doc()
    doc["send"]["ok"] = []
    path = _write(tmp_path, doc)
    experiment = json.loads((bundled("experiments") / "mixed_load.json").read_text())
    errors = configuration_errors(
        experiment, {**experiment["configuration"], "platform": str(path)}
    )
    assert errors == [
        f"platform file {path}: send.ok: List should have at least 1 item after validation, not 0"
    ]


def test_what_t2_and_t3_need_beyond_the_operations_is_described_in_the_reference_file():
    """Optimistic concurrency, the participant-cache header and the answering process's header
    are optional parts of the file; the reference platform describes all three."""
    platform = load_platform(REFERENCE)
    update = platform.conversations.update
    assert update.concurrency.current_version == "$.current_version"
    assert update.extract["version"] == "$.version" and update.conflict == [409]
    api = platform.services["api"]
    assert (api.cache_header.name, api.cache_header.hit, api.cache_header.miss) == (
        "X-Participant-Cache",
        ["hit"],
        ["miss"],
    )
    assert api.served_by_header == "X-Served-By"
    page = platform.conversations.list.page
    assert (page.title, page.creator) == ("$.title", "$.created_by")
    # none of them is required: a platform without them is valid (Matrix has none)
    matrix = load_platform(bundled("platforms") / "matrix.yaml")
    assert matrix.conversations.update.concurrency is None
    assert matrix.services["client"].cache_header is None
    assert matrix.services["client"].served_by_header is None


def _update(doc: dict) -> dict:
    return doc["conversations"]["update"]


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        # a conflict status means versions: say how they travel
        (lambda d: _update(d).pop("concurrency"), "conversations.update", "needs 'concurrency'"),
        # a version nobody sends cannot be stale
        (
            lambda d: _update(d).__setitem__("body", {"title": "{title}"}),
            "conversations.update",
            "put {version} where the request carries",
        ),
        (
            lambda d: _update(d).__setitem__("conflict", []),
            "conversations.update",
            "list the statuses of a stale update in 'conflict'",
        ),
        (
            lambda d: _update(d).__setitem__("extract", {}),
            "conversations.update",
            "extract.version says where a reply gives",
        ),
        (
            lambda d: [d["conversations"][o]["extract"].pop("version") for o in ("create", "get")],
            "conversations.update.concurrency",
            "must extract 'version'",
        ),
        (
            lambda d: _update(d)["concurrency"].__setitem__("current_version", "current_version"),
            "conversations.update.concurrency.current_version",
            "a JSONPath",
        ),
        (
            lambda d: d["services"]["api"]["cache_header"].__setitem__("hit", []),
            "services.api.cache_header.hit",
            "at least 1",
        ),
        (
            lambda d: d["services"]["api"]["cache_header"].__setitem__("hti", ["hit"]),
            "services.api.cache_header.hti",
            "Extra inputs",
        ),
        (
            lambda d: d["conversations"]["list"]["page"].__setitem__("creator", "created_by"),
            "conversations.list.page.creator",
            "a JSONPath",
        ),
    ],
)
def test_the_optional_t2_t3_fields_are_schema_checked(tmp_path, change, field, says):
    doc = _reference_doc()
    change(doc)
    with pytest.raises(PlatformError) as caught:
        load_platform(_write(tmp_path, doc))
    errors = [e for e in caught.value.errors if e.startswith(f"{field}:") or f" {field}:" in e]
    assert errors and says in " ".join(errors), caught.value.errors


def test_an_update_without_versions_is_valid_without_concurrency(tmp_path):
    doc = _reference_doc()
    update = _update(doc)
    for key in ("concurrency", "conflict"):
        update.pop(key)
    update["body"] = {"title": "{title}"}
    assert load_platform(_write(tmp_path, doc)).conversations.update.concurrency is None

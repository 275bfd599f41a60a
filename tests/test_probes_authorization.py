"""The T2 authorization and optimistic-concurrency verdicts, judged from a k6 summary and log as
`k6/conversation_stress.js` writes them and from a real /metrics endpoint: they pass on honest
figures and fail — naming the requests — on a leak, a lost update, or counts that do not add up."""

import json
import time

import pytest
from support.prom_endpoints import serve_metrics

from chaosmessaging import runs
from chaosmessaging.probes import authorization, marks, metrics

DENIED, CONFLICTS = authorization.DENIED, authorization.CONFLICTS


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def api(home):
    """An API /metrics whose counters grow by 5 per scrape (the snapshot is the first scrape)."""
    url, stop = serve_metrics({DENIED: lambda n: 5.0 * n, CONFLICTS: lambda n: 5.0 * n})
    config = {"chaosmessaging_home": str(home), "messaging_api_url": url}
    marks.mark("method", configuration=config)
    metrics.snapshot_metrics("t2", configuration=config)
    yield config
    stop()


def load(home, counts: dict, log: str = "") -> None:
    """Record a finished k6 load 't2' with these counters (as --summary-export writes them)."""
    summary, log_path = home / "t2.json", home / "t2.log"
    summary.write_text(json.dumps({"metrics": {k: {"count": v} for k, v in counts.items()}}))
    log_path.write_text(log)
    runs.record(
        "load:t2",
        {
            "label": "t2",
            "summary_path": str(summary),
            "log_path": str(log_path),
            "started_at": time.time(),
        },
        home=str(home),
    )


HONEST = {
    "authz_attempts": 40,
    "authz_denied": 40,
    "authz_leaks": 0,
    "list_leaks": 0,
    "stale_updates": 10,
    "version_conflicts": 25,
    "stale_accepted": 0,
}


def test_both_verdicts_hold_on_honest_figures(home, api):
    load(home, HONEST)
    denied = authorization.unauthorized_access_denied("t2", "t2", configuration=api)
    conflicts = authorization.version_conflicts_detected("t2", "t2", configuration=api)
    assert denied["ok"] is True and denied["server_denied"] > 0, denied
    assert conflicts["ok"] is True and conflicts["conflicts"] == 25, conflicts


def test_a_read_answered_200_is_a_leak_named_by_user_and_conversation(home, api):
    line = "AUTHZ_LEAK user=u-1 read conversation=c-9 of user=u-2"
    load(
        home,
        {**HONEST, "authz_denied": 39, "authz_leaks": 1},
        f'time="..." level=warning msg="{line}" source=console\n',
    )
    verdict = authorization.unauthorized_access_denied("t2", "t2", configuration=api)
    assert verdict["ok"] is False and verdict["reason"].startswith("LEAK")
    assert verdict["examples"] == [line]


def test_a_stale_version_accepted_is_a_lost_update(home, api):
    line = "STALE_ACCEPTED conversation=c-3 version=4"
    load(home, {**HONEST, "stale_accepted": 1}, f'msg="{line}"\n')
    verdict = authorization.version_conflicts_detected("t2", "t2", configuration=api)
    assert verdict["ok"] is False and verdict["examples"] == [line]


@pytest.mark.parametrize(
    "counts, fails",
    [
        ({"authz_attempts": 0, "authz_denied": 0}, "unauthorized"),
        ({"authz_denied": 30, "authz_other_answers": 10}, "unauthorized"),
        ({"version_conflicts": 0}, "conflicts"),
    ],
)
def test_nothing_proven_or_incomplete_answers_fail(home, api, counts, fails):
    load(home, {**HONEST, **counts})
    probe = (
        authorization.unauthorized_access_denied
        if fails == "unauthorized"
        else authorization.version_conflicts_detected
    )
    assert probe("t2", "t2", configuration=api)["ok"] is False


def test_counts_the_api_did_not_make_fail(home):
    url, stop = serve_metrics({DENIED: lambda n: 3.0, CONFLICTS: lambda n: 3.0})  # flat
    try:
        config = {"chaosmessaging_home": str(home), "messaging_api_url": url}
        marks.mark("method", configuration=config)
        metrics.snapshot_metrics("t2", configuration=config)
        load(home, HONEST)
        denied = authorization.unauthorized_access_denied("t2", "t2", configuration=config)
        conflicts = authorization.version_conflicts_detected("t2", "t2", configuration=config)
    finally:
        stop()
    assert denied["ok"] is False and "did not grow" in denied["reason"]
    assert conflicts["ok"] is False and "did not grow" in conflicts["reason"]

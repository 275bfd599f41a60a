"""The T11 readiness verdict judges every answer asked after an outage began, but those of the
sampling interval in which it struck: a readiness that keeps saying 200 for a moment after its
database died (a cached check) fails, while the one answer that may have been on its way when the
fault struck is forgiven. The record is the file `watch_services` writes, with scripted answers."""

import json
import time

import pytest

from chaosmessaging import runs
from chaosmessaging.probes import availability, marks
from chaosmessaging.util import atomic_write_json


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV, f"test-{time.monotonic_ns()}")
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    return {"chaosmessaging_home": str(tmp_path)}


def _watch(config: dict, interval: float, killed: float, stale_s: float) -> None:
    """Answers every `interval` s around a PostgreSQL outage at `killed` lasting 6 s; the api
    keeps answering 200 for `stale_s` s after it, the dispatcher reports at once."""
    answers = {"api": [], "dispatcher": []}
    t = killed - 2.0
    while t < killed + 6.0:
        down = killed <= t
        for service, lag in (("api", stale_s), ("dispatcher", 0.0)):
            reports = down and t >= killed + lag
            degraded = ["postgres"] if reports else []
            answers[service].append([t, 503 if reports else 200, degraded, None])
        t += interval
    path = availability._path("t11", config["chaosmessaging_home"])
    atomic_write_json(path, {"label": "t11", "interval_s": interval, "answers": answers})


def _judge(config: dict, killed: float, **kw) -> dict:
    runs.record("mark:pg_killed", killed, home=config["chaosmessaging_home"])
    runs.record("mark:pg_restored", killed + 6.0, home=config["chaosmessaging_home"])
    return availability.degradation_reported(
        "postgres", "pg_killed", "pg_restored", label="t11", configuration=config, **kw
    )


def test_a_readiness_stale_for_a_second_fails_though_a_3_s_grace_let_it_pass(config):
    marks.mark("method", configuration=config)
    killed = time.time() - 10
    _watch(config, 0.2, killed, stale_s=1.0)
    judged = _judge(config, killed)
    assert judged["ok"] is False and judged["grace_s"] == 0.2, judged
    assert judged["services"]["api"]["not_reported"] >= 3
    assert judged["services"]["dispatcher"]["not_reported"] == 0
    assert "api: " in judged["reason"] and "did not report postgres" in judged["reason"]
    assert _judge(config, killed, grace_s=3)["ok"] is True  # the old grace hid it


def test_the_answer_of_the_interval_the_fault_struck_in_is_forgiven(config):
    marks.mark("method", configuration=config)
    killed = time.time() - 10
    _watch(config, 0.2, killed, stale_s=0.15)
    judged = _judge(config, killed)
    assert judged["ok"] is True, judged


def test_an_answer_that_came_after_the_dependency_was_back_is_not_judged(config):
    """Asked during the outage, answered after the restoration (a busy service): it may say 200."""
    marks.mark("method", configuration=config)
    killed = time.time() - 10
    _watch(config, 0.2, killed, stale_s=0.0)
    path = availability._path("t11", config["chaosmessaging_home"])
    watched = json.loads(path.read_text())
    late = [killed + 5.95, 200, [], None, killed + 6.3]  # asked before pg_restored, answered after
    watched["answers"]["api"].append(late)
    atomic_write_json(path, watched)
    assert _judge(config, killed)["ok"] is True
    late[4] = killed + 5.99  # answered before the restoration: a 200 then is a lie
    atomic_write_json(path, watched)
    assert _judge(config, killed)["ok"] is False

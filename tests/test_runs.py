"""Run facts: one run id per process, facts shared between activities, safe under threads."""

import threading

import pytest

from chaosmessaging import runs


@pytest.fixture
def fresh_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    monkeypatch.delenv(runs.ENV, raising=False)
    return runs.new_run()


def test_facts_recorded_from_concurrent_threads_are_all_kept(fresh_run):
    def writer(i: int) -> None:
        for j in range(50):
            runs.record(f"k{i}-{j}", j)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([k for k in runs.facts() if k.startswith("k")]) == 200


def test_prefixes_and_method_mark_follow_the_current_run(fresh_run):
    assert runs.current_run_id() == fresh_run
    assert runs.message_prefix() == f"{fresh_run}/"
    assert runs.message_prefix("baseline") == f"{fresh_run}/baseline:"
    assert not runs.method_started()
    runs.record("mark:method", 1.0)
    assert runs.method_started()
    runs.record("load:b", {"label": "b", "started_at": 2})
    runs.record("load:a", {"label": "a", "started_at": 1})
    assert [v["label"] for v in runs.loads()] == ["a", "b"]
    assert runs.loads(label="b")[0]["started_at"] == 2

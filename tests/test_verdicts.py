"""Record now, judge later, written once: `judges_method` (the verdict before the method),
`logged` (the one "ok/BREACHED" line) and `runs.Snapshots` (a labelled snapshot of the run)."""

import ast
import inspect
import logging
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.probes import login, marks, process, recovery, trends
from chaosmessaging.verdicts import argument, judges_method, logged, verdict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv(runs.ENV, raising=False)
    config = {"chaosmessaging_home": str(tmp_path)}
    runs.new_run(str(tmp_path))
    return config


@judges_method(count=None, at_most=argument("at_most", float), seen=[])
def _count_at_most(at_most: float = 1, configuration: dict = None, secrets: dict = None):
    """Verdict: something counted at most `at_most`."""
    return verdict(True, f"judged with at most {at_most}", count=0)


def test_before_the_method_the_verdict_holds_with_its_figures_and_the_probe_does_not_run(home):
    held = _count_at_most("3", configuration=home)
    assert held == {
        "ok": True,
        "reason": "holds before the method starts: nothing to judge yet",
        "phase": "before",
        "count": None,
        "at_most": 3.0,
        "seen": [],
    }
    held["seen"].append("changed by a caller")
    assert _count_at_most(configuration=home)["seen"] == []  # figures are copied per call
    assert _count_at_most(configuration=home)["at_most"] == 1.0  # the argument's default


def test_once_the_method_started_the_probe_itself_judges(home):
    marks.mark("method", configuration=home)
    assert _count_at_most(2, configuration=home) == {
        "ok": True,
        "reason": "judged with at most 2",
        "count": 0,
    }


def test_the_declared_probe_keeps_its_name_docstring_and_signature_for_chaos_discover():
    assert _count_at_most.__name__ == "_count_at_most"
    assert _count_at_most.__doc__ == "Verdict: something counted at most `at_most`."
    assert list(inspect.signature(_count_at_most).parameters) == [
        "at_most",
        "configuration",
        "secrets",
    ]
    assert _count_at_most.judges_method
    # a real probe below platform_applies: still its own signature
    assert list(inspect.signature(recovery.pending_reclaimed).parameters)[:3] == [
        "label",
        "stream",
        "group",
    ]


def test_a_figure_naming_no_argument_of_the_probe_is_refused_at_import():
    with pytest.raises(TypeError, match="no argument"):

        @judges_method(limit=argument("limmit", float))
        def _probe(limit: float, configuration=None, secrets=None):
            """Doc."""


def test_arguments_no_run_could_judge_are_refused_before_the_method_too(home):
    with pytest.raises(ActivityFailed, match="quantile=0.7"):
        login.login_latency_within_reference(2, quantile=0.7, configuration=home)
    with pytest.raises(ActivityFailed, match="warmup_fraction=1"):
        trends.memory_per_message_within("soak", 1000, warmup_fraction=1, configuration=home)
    overlapping = trends.memory_growth_within("soak", 10, window_fraction=0.8, configuration=home)
    assert overlapping["ok"] is False and "window_fraction=0.8" in overlapping["reason"]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_logged_writes_one_ok_or_breached_line_and_returns_the_verdict_unchanged():
    lines = _Lines()
    logger.addHandler(lines)
    try:
        held = verdict(True, "3 of 3 reclaimed", reclaimed=3)
        assert logged(held) is held
        logged(verdict(False, "p95 900 ms > 500 ms"), "login latency")
    finally:
        logger.removeHandler(lines)
    assert lines.lines == [
        "3 of 3 reclaimed -> ok",
        "login latency: p95 900 ms > 500 ms -> BREACHED",
    ]


def test_a_snapshot_is_the_run_fact_kind_label_and_a_missing_one_names_its_label(home):
    snapshots = runs.Snapshots("identities", "no identity snapshot {label!r}: take one")
    assert snapshots.get("before", home) is None
    with pytest.raises(runs.MissingSnapshot, match="no identity snapshot 'before': take one"):
        snapshots.require("before", home)
    assert snapshots.record("before", {"api": [1]}, home) == {"api": [1]}
    assert snapshots.require("before", home) == {"api": [1]}
    # the key the nightly collector, the report and the actions read
    assert runs.fact("identities:before", home=home["chaosmessaging_home"]) == {"api": [1]}
    assert runs.MARKS.key("method") == "mark:method"


def test_a_verdict_without_its_snapshot_says_which_label_and_which_recorder(home):
    marks.mark("method", configuration=home)
    missing = process.no_crash("at_start", configuration=home)
    assert missing["ok"] is False
    assert missing["reason"] == (
        "no identity snapshot 'at_start': add snapshot_identities(label='at_start') to the method"
    )


def _calls(name: str) -> list[str]:
    found = []
    for path in sorted((ROOT / "chaosmessaging").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_rules_are_written_once():
    # a verdict about the method's effect declares it (@judges_method); held_before_method is
    # left only where a probe judges whatever evidence exists (k6: loads, raw samples)
    assert [c.split(":")[0] for c in _calls("held_before_method")] == [
        "chaosmessaging/probes/k6.py",
        "chaosmessaging/probes/k6.py",
    ]
    breached = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "chaosmessaging").rglob("*.py")
        if "BREACHED" in p.read_text() and p.name != "verdicts.py"
    ]
    assert breached == []
    recorders = [
        str(p.relative_to(ROOT))
        for p in [
            *(ROOT / "chaosmessaging" / "probes").rglob("*.py"),
            ROOT / "chaosmessaging/clients/redis.py",
        ]
        if "runs.record(" in p.read_text()
    ]
    assert recorders == []  # recorders go through runs.Snapshots

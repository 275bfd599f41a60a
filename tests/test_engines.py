"""The engines behind the activities, driven directly (no `chaos`, no experiment): the open
loop of the platform scenarios, the delivery accounting, the metrics sampler, the k6 run, and
the one call that resolves and checks an address."""

import asyncio
import json

import pytest
from support.prom_endpoints import serve_metrics

from chaosmessaging import targets
from chaosmessaging.actions.load import K6Run, _checked_duration
from chaosmessaging.actions.sampling import Sampler
from chaosmessaging.clients.prometheus import ScrapeSource
from chaosmessaging.evidence.delivery import account
from chaosmessaging.platform.scenarios import open_loop

MEM = "process_resident_memory_bytes"


def test_open_loop_drops_arrivals_beyond_max_inflight_and_runs_every_beside():
    started, beside = [], []

    async def job(i: int) -> None:
        started.append(i)
        await asyncio.sleep(0.5)  # outlasts every arrival: the first two hold both slots

    async def side(i: int) -> None:
        beside.append(i)

    dropped = asyncio.run(open_loop(200.0, 20, 2, job, lambda i: side(i) if i % 5 == 0 else None))
    assert started == [0, 1] and dropped == 18
    assert sorted(beside) == [0, 5, 10, 15]  # beside its arrival, dropped or not


def _limits(**changes) -> dict:
    limits = dict(
        p95_ms=1000,
        late_ms=None,
        max_late=None,
        max_lost=0,
        max_duplicated=0,
        max_leaked=0,
        max_corrupted=0,
        max_disconnects=0,
        max_reconnect_s=None,
        min_reconnects=0,
        min_messages=1,
    )
    return {**limits, **changes}


def _frame(message: str, device: str, **more) -> dict:
    return {
        "kind": "frame",
        "message_id": message,
        "device": device,
        "conversation_id": "c1",
        "mine": True,
        "hash_ok": True,
        "latency_s": 0.05,
        **more,
    }


FLEET = {"conversations": [{"id": "c1", "members": ["a", "b"]}], "devices_per_user": 1}
FLEET["users"] = ["a", "b"]


def test_account_holds_when_every_acknowledged_message_reached_every_device_once():
    lines = [_frame(m, d) for m in ("m1", "m2") for d in ("a/d0", "b/d0")]
    result = account(FLEET, lines, {"m1": "c1", "m2": "c1"}, **_limits())
    assert result["ok"], result
    assert (result["expected"], result["lost"], result["duplicated"]) == (4, 0, 0)
    assert result["p95_ms"] == 50.0


def test_account_names_the_lost_the_duplicated_the_corrupted_and_the_closed_sockets():
    lines = [
        _frame("m1", "a/d0"),
        _frame("m1", "b/d0", hash_ok=False),
        _frame("m2", "a/d0"),
        _frame("m2", "a/d0"),
        {"kind": "close", "by": "server", "code": 1011},
    ]
    result = account(FLEET, lines, {"m1": "c1", "m2": "c1"}, **_limits())
    assert not result["ok"]
    assert (result["lost"], result["duplicated"], result["corrupted"]) == (1, 1, 1)
    assert result["examples"]["lost"] == ["m2 -> b/d0"]
    assert result["close_codes"] == {"1011": 1} and result["disconnects"] == 1
    for said in ("1 lost (max 0)", "1 duplicated (max 0)", "1 corrupted (max 0)", "sockets closed"):
        assert said in result["reason"]


def test_sampler_reads_every_source_on_its_grid_and_keeps_a_gap_for_a_missing_metric(tmp_path):
    url, stop = serve_metrics({MEM: lambda n: 100.0 + n})
    try:
        sampler = Sampler({"api": ScrapeSource(url)}, [MEM, "absent"], 0.2, 0.4)
        sampler.run()
    finally:
        stop()
    summary = sampler.save(tmp_path / "samples.json", "t")
    series = json.loads((tmp_path / "samples.json").read_text())["services"]["api"]
    assert sampler.ticks == 3 and summary["errors"] == {"api": 0}
    assert series[MEM] == [100.0, 101.0, 102.0] and series["absent"] == [None] * 3
    assert summary["figures"]["api"][MEM]["last"] == 102.0


def test_k6_run_prepares_its_files_and_passes_values_with_e_and_the_script_last(tmp_path):
    duration, seconds = _checked_duration(50, None, 500, "2h", 20000)
    assert (duration, seconds) == ("10s", 10.0)
    script = tmp_path / "load.js"
    script.write_text("export default function () {}\n")
    summary = tmp_path / "out" / "run.json"
    summary.parent.mkdir()
    summary.write_text("{}")  # a stale summary must not pass for this run's
    run = K6Run.prepare(script, str(tmp_path), "l", "r/l", str(summary), seconds, 50, None, False)
    assert not summary.exists() and run.log_path == summary.with_name("run.log")
    cmd = run.command({"RATE": "50", "RUN_ID": "r/l"}, [])
    assert cmd[-1] == str(script) and cmd[cmd.index("--summary-export") + 1] == str(summary)
    assert ["-e", "RATE=50", "-e", "RUN_ID=r/l"] == cmd[-5:-1]


def test_address_looks_up_adds_the_scheme_and_refuses_in_one_call(monkeypatch):
    monkeypatch.delenv(targets.ALLOW_ENV, raising=False)
    assert (
        targets.address("prometheus_url", {"prometheus_url": "127.0.0.1:9090"}, scheme="http")
        == "http://127.0.0.1:9090"
    )
    with pytest.raises(targets.TargetRefused, match="refusing prometheus_url http://10.1.2.3:9"):
        targets.address("prometheus_url", {"prometheus_url": "10.1.2.3:9"}, scheme="http")


@pytest.mark.slow
def test_the_crud_scenario_carries_the_version_on_a_platform_with_optimistic_concurrency(
    embedded_stack,
):
    """On the reference platform (updates carry the version last read, a stale one is 409), the
    Python CRUD scenario sends the version it saw: every update is accepted, none conflicts."""
    from chaosmessaging.config import lookup
    from chaosmessaging.platform import load_platform
    from chaosmessaging.platform.scenarios import run_crud

    configuration = {"chaosmessaging_home": embedded_stack.home}
    platform = load_platform(configuration=configuration)
    assert platform.conversations.update.concurrency is not None
    figures = asyncio.run(
        run_crud(
            platform,
            "crud-versions",
            "engine-test-run",
            lookup("messaging_loadtest_prefix", configuration),
            lookup("messaging_loadtest_password", configuration),
            users=3,
            rate=15.0,
            duration_s=3.0,
            mix={"create": 0.3, "update": 0.7},
            foreign_read_every=0,
        )
    )
    update = figures["per_op"]["update"]
    assert update["count"] > 10, figures
    # two updates of one conversation in flight at once: the second is rightly a conflict
    assert set(update["outcomes"]) <= {"ok", "conflict"}, figures
    assert update["outcomes"]["ok"] >= 0.8 * update["count"], figures

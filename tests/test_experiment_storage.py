"""The storage experiments (plan tests 7, 10 and 13), run by the real `chaos` CLI.

Each passes in its smoke profile on a healthy embedded stack and fails on a sabotage of the
reference stack (the selfcheck's mutants, `MSGSTACK_MUTANT`): a PostgreSQL pool connection leaked
on an error path (T10: the pool never drains), a circuit breaker that never closes (T10) with a
cache that expires at once (T7: the hit ratio collapses); and on a blocking migration, an index
built without CONCURRENTLY (T13: p95 during the migration far above the baseline).
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from chaosmessaging import faults
from chaosmessaging.stack import launcher, servers
from conftest import CHAOS, SUPPORT, chaos_env

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

pytestmark = pytest.mark.slow


def _after(journal: dict) -> dict:
    return {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}


def _breached(journal: dict) -> list[str]:
    return [name for name, p in _after(journal).items() if p["tolerance_met"] is False]


def _why(journal: dict, output: str) -> str:
    """The breached verdicts with their figures, then the end of chaos's output."""
    failed = {n: p.get("output") for n, p in _after(journal).items() if not p["tolerance_met"]}
    return json.dumps(failed, indent=1, default=str)[:3000] + "\n" + output[-1500:]


@contextmanager
def _environ(**changes: str):
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _sabotaged_stack(tmp_path_factory, name: str, **env: str):
    """A private embedded stack whose services run with `env` (the sabotage)."""
    home = tmp_path_factory.mktemp(name)
    with _environ(**env):
        state = launcher.up(home, proxy_port=servers.free_port())
    try:
        yield state
    finally:
        launcher.down(home)


def _run(stack, tmp_path: Path, experiment: str, *extra: str) -> tuple[int, dict, str]:
    journal = tmp_path / f"{experiment}.journal.json"
    proc = subprocess.run(
        [
            CHAOS,
            "--log-file",
            str(tmp_path / f"{experiment}.log"),
            "run",
            "--journal-path",
            str(journal),
            *extra,
            str(EXPERIMENTS / f"{experiment}.json"),
        ],
        env=chaos_env(stack),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    return proc.returncode, json.loads(journal.read_text()), proc.stdout + proc.stderr


def test_multi_adapter_soak_smoke_holds(embedded_stack, tmp_path):
    code, journal, output = _run(embedded_stack, tmp_path, "multi_adapter_soak")
    assert code == 0, _why(journal, output)
    after = _after(journal)
    assert after["cache-hit-ratio-above-limit"]["output"]["ratio"] > 0.85
    assert after["retries-below-1-percent-of-requests"]["output"]["requests"] > 0
    assert set(after["adapter-latencies-stable"]["output"]["ops"]) == {
        "pg_write",
        "stream_publish",
        "cache_read",
    }


def test_pool_exhaustion_smoke_holds_and_releases_the_lock(embedded_stack, tmp_path):
    code, journal, output = _run(embedded_stack, tmp_path, "pool_exhaustion")
    assert code == 0, _why(journal, output)
    after = _after(journal)
    seen = after["pool-exhaustion-observed"]["output"]
    # each API worker process has its own pool of 20 (MSGSTACK_POOL_MAX); the gauges sum them
    assert seen["max_in_use"] == seen["pool_max"] and seen["pool_max"] % 20 == 0
    assert seen["pool_max"] >= 20 and seen["max_waiting"] > 0
    assert after["breaker-opened"]["output"]["opened"] >= 1
    assert after["breaker-closed-after-load-dropped"]["output"]["state"] == "closed"
    assert faults.active(embedded_stack.home) == []


def test_migration_under_load_smoke_holds(embedded_stack, tmp_path):
    code, journal, output = _run(embedded_stack, tmp_path, "migration_under_load")
    assert code == 0, _why(journal, output)
    after = _after(journal)
    assert after["migration-finished-within-limit"]["output"]["seconds"] < 60


def test_migration_under_load_fails_with_a_blocking_index_build(embedded_stack, tmp_path):
    profile = tmp_path / "blocking.json"
    profile.write_text(
        json.dumps({"configuration": {"t13_migration": str(SUPPORT / "blocking_migration.sql")}})
    )
    code, journal, output = _run(
        embedded_stack, tmp_path, "migration_under_load", "--var-file", str(profile)
    )
    assert code != 0 and journal["deviated"], _why(journal, output)
    assert _breached(journal) == ["p95-during-migration-below-factor-of-baseline"]
    p95 = _after(journal)["p95-during-migration-below-factor-of-baseline"]["output"]
    assert p95["p95_during_ms"] > p95["limit_ms"]


def test_pool_exhaustion_fails_when_a_connection_leaks_on_an_error_path(tmp_path_factory, tmp_path):
    with _sabotaged_stack(
        tmp_path_factory, "leaky-stack", MSGSTACK_MUTANT="storage_leak_on_error"
    ) as stack:
        code, journal, output = _run(stack, tmp_path, "pool_exhaustion")
        assert code != 0 and journal["deviated"], _why(journal, output)
        assert _breached(journal) == ["pool-drained-no-leak"]
        drained = _after(journal)["pool-drained-no-leak"]["output"]
        assert drained["in_use"] > 0
        assert faults.active(stack.home) == []  # the lock itself was released


def test_breaker_that_never_closes_fails_t10_and_a_cache_that_expires_fails_t7(
    tmp_path_factory, tmp_path
):
    with _sabotaged_stack(
        tmp_path_factory,
        "stuck-stack",
        MSGSTACK_MUTANT="storage_breaker_never_closes,storage_cache_expires_at_once",
    ) as stack:
        # T7 first: once T10 opened the breaker, it stays open for the rest of this stack's life
        code, journal, output = _run(stack, tmp_path, "multi_adapter_soak")
        assert code != 0 and journal["deviated"], _why(journal, output)
        assert _breached(journal) == ["cache-hit-ratio-above-limit"]
        assert _after(journal)["cache-hit-ratio-above-limit"]["output"]["ratio"] < 0.85

        code, journal, output = _run(stack, tmp_path, "pool_exhaustion")
        assert code != 0 and journal["deviated"], _why(journal, output)
        assert _breached(journal) == ["breaker-closed-after-load-dropped"]
        # never closed: open, or half-open while a trial is under way (never "closed")
        state = _after(journal)["breaker-closed-after-load-dropped"]["output"]["state"]
        assert state in ("open", "half_open")

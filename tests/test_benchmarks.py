"""Every benchmark still runs: each is started at a tiny size against its own private stack.

The benchmarks are scripts, not tests (their figures depend on the machine), so nothing else runs
them; two of them broke silently when the load scripts began to need the platform file. These
runs check that each one starts, measures and prints its figures, never what the figures are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: float = 240) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_the_pipeline_benchmark_logs_in_sends_and_accounts_for_every_message(tmp_path):
    out = tmp_path / "figures.json"
    stdout = _run(
        "pipeline_bench.py", "--rates", "20", "--duration", "3", "--no-ceiling",
        "--pg-statements", "--json", str(out),
    )  # fmt: skip
    figures = json.loads(out.read_text())
    (result,) = figures["results"]
    assert result["rate"] == 20 and result["accepted"] > 0
    assert result["delivered"] == result["accepted"]
    assert result["cpu_s"]["k6"] > 0 and result["cpu_s"]["api"] > 0
    # PostgreSQL's time by statement while k6 ran: the API's write, once per accepted message
    writes = [s for s in result["statements"] if "INSERT INTO messages" in s["query"]]
    assert writes and sum(s["calls"] for s in writes) >= result["accepted"], result["statements"]
    assert "PostgreSQL's statements at 20/s" in stdout, stdout[-2000:]


def test_the_login_benchmark_logs_in_at_its_rate():
    stdout = _run("login_bench.py", "--rates", "5", "--duration", "3")
    row = next(line.split() for line in stdout.splitlines() if line.strip().startswith("5 "))
    assert float(row[1]) > 0 and row[5] == "100.00%", stdout


def test_the_gateway_benchmark_fans_out_every_frame():
    stdout = _run(
        "gateway_bench.py", "--connections", "3", "--duration", "2", "--users", "3",
        "--idle", "10", "--rates", "5",
    )  # fmt: skip
    fanout = next(json.loads(line) for line in stdout.splitlines() if '"frames"' in line)
    assert fanout["accepted"] > 0 and fanout["frames"] == fanout["expected"], stdout


def test_the_proxy_benchmark_measures_latency_and_throughput():
    stdout = _run("proxy_bench.py", "--pings", "100", "--megabytes", "1", "--rounds", "1")
    assert "added    p50" in stdout and "throughput upstream" in stdout, stdout

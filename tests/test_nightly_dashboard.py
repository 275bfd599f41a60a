"""The nightly dashboard, opened in a real headless Chromium: offline (no CDN), the night's
verdicts, criteria, time series with fault windows shaded, and trends with the regression named.

Chromium is Debian's `chromium` (`.ci/run` installs it when root) or a preinstalled Chrome; on a
machine with neither the browser tests are skipped with that reason."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chaosmessaging.nightly import catalog, dashboard, history
from chaosmessaging.nightly.runner import run_suite

CLI = str(Path(sys.executable).with_name("chaosmessaging"))
ROOT = Path(__file__).resolve().parents[1]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no headless Chromium here: install Debian's `chromium` (apt-get install -y "
        "chromium, as root; .ci/run does it when root) to run the dashboard browser tests"
    )


def open_in_browser(page: Path, tmp_path: Path, screenshot: Path) -> str:
    """Load `page` in headless Chromium (network disabled); save a screenshot; return the DOM
    after its scripts ran."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=10000",
        "--window-size=1400,2400",
    ]
    url = page.resolve().as_uri()
    for kind, extra in (("dom", ["--dump-dom"]), ("shot", [f"--screenshot={screenshot}"])):
        profile = tmp_path / f"chromium-{kind}"
        profile.mkdir()
        result = subprocess.run(
            [browser(), *flags, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        if kind == "dom":
            dom = result.stdout
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    return dom


def synthetic_history(path: Path, experiment: str) -> None:
    """30 nights of figures: p95 steps up 12% on 2026-10-28 and holds."""
    for day in range(1, 31):
        p95 = 40.0 if day < 28 else 44.8
        history.append(
            path,
            f"2026-10-{day:02d}",
            "smoke",
            {
                f"{experiment}.baseline.p95_ms": p95,
                f"{experiment}.baseline.throughput_rps": 50.0,
                f"{experiment}.passed": 1.0,
                f"{experiment}.duration_s": 40.0,
                "suite.coverage_pct": 93.0,
            },
        )


def test_the_page_is_self_contained_with_no_cdn(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path / "home"))
    exps = tmp_path / "experiments"
    exps.mkdir()
    (exps / "quick.json").write_text(
        json.dumps(
            {
                "title": "quick",
                "description": "t",
                "method": [],
                "steady-state-hypothesis": {
                    "title": "t",
                    "probes": [
                        {
                            "type": "probe",
                            "name": "root-exists",
                            "tolerance": True,
                            "provider": {
                                "type": "python",
                                "module": "os.path",
                                "func": "exists",
                                "arguments": {"path": "/"},
                            },
                        }
                    ],
                },
            }
        )
    )
    night = tmp_path / "results" / "2026-10-30"
    run_suite(catalog.discover(exps), "smoke", night, progress=lambda m: None)
    hist = tmp_path / "results" / "history.json"
    synthetic_history(hist, "quick")
    page = dashboard.render_night(night, hist)
    text = page.read_text()
    assert not re.search(r"<script[^>]+src=", text), "a script loads from elsewhere"
    assert "cdn." not in text.split("<script", 1)[0]
    assert "Plotly" in text  # plotly.js is embedded

    dom = open_in_browser(page, tmp_path, tmp_path / "night.png")
    assert re.search(r"id=\"verdict\"[^>]*>PASSED<", dom)
    assert 'data-name="quick" data-status="passed"' in dom
    assert "js-plotly-plot" in dom and "main-svg" in dom  # plotly rendered offline
    regressions = re.search(r'id="regressions" data-count="(\d+)"', dom)
    assert regressions and regressions.group(1) == "1"
    assert "since 2026-10-28" in dom  # the night the shift began

    index = dashboard.render_index(tmp_path / "results", hist, "smoke")
    (tmp_path / "index").mkdir()
    dom = open_in_browser(index, tmp_path / "index", tmp_path / "index.png")
    assert 'href="2026-10-30/index.html"' in dom
    assert 'id="pass-fail-matrix"' in dom and 'id="trend-coverage"' in dom


@pytest.mark.slow
def test_a_real_nightly_run_shows_its_fault_window_and_series(embedded_stack, tmp_path):
    """`chaosmessaging nightly --only redis_latency` against the session's embedded stack."""
    browser()
    night = tmp_path / "nightly" / "2026-11-25"
    proc = subprocess.run(
        [
            CLI,
            "--home",
            embedded_stack.home,
            "nightly",
            "--only",
            "redis_latency",
            "--results",
            str(night),
            "--no-alerts",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[1/1] redis_latency: Action: degraded-load" in proc.stdout  # live progress
    folder = night / "redis_latency"
    for name in (
        "journal.json",
        "chaos.log",
        "stack-samples.json",
        "fault-windows.json",
        "delivery-latency.json",
        "logs/api.log",
        "logs/consumer.log",
    ):
        assert (folder / name).exists(), name
    assert list(folder.glob("k6/*/degraded.json")), "the k6 summaries were not collected"
    windows = json.loads((folder / "fault-windows.json").read_text())
    toxic = [w for w in windows if w["kind"] == "toxic"]
    assert toxic and toxic[0]["reverted_at"] > toxic[0]["injected_at"]
    figures = json.loads((night.parent / "history.json").read_text())["nights"][-1]["figures"]
    for key in (
        "redis_latency.degraded.p99_ms",
        "redis_latency.baseline.throughput_rps",
        "redis_latency.api.memory_mb",
        "redis_latency.consumer.cpu_pct",
        "redis_latency.redis_clients_max",
        "redis_latency.postgres_backends_max",
    ):
        assert key in figures, (key, sorted(figures))
    assert figures["redis_latency.postgres_backends_max"] > 0
    shot = tmp_path / "dashboard.png"
    dom = open_in_browser(night / "index.html", tmp_path, shot)
    print(f"dashboard screenshot: {shot}")
    assert re.search(r"id=\"verdict\"[^>]*>PASSED<", dom)
    assert 'id="criteria-redis_latency"' in dom and "latency-degraded-then-recovered" in dom
    assert "end-to-end delivery latency (ms)" in dom and "consumer PEL size" in dom
    assert "connections (Redis clients, PostgreSQL backends)" in dom
    assert "toxic toxiproxy:redis" in dom  # the shaded window's label
    assert dom.count('data-ok="true"') >= 3

"""Regression detection over nights (plan T15) on synthetic histories."""

import random

from chaosmessaging.nightly.regressions import detect

NIGHTS = [f"2026-10-{day:02d}" for day in range(1, 31)]


def noisy(level: float, count: int, spread: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [level * (1 + rng.uniform(-spread, spread)) for _ in range(count)]


def test_a_12_percent_step_held_three_nights_fails_and_names_the_night_it_began():
    history = [100.0] * 27 + [112.0] * 3
    finding = detect("p95_ms", history, NIGHTS)
    assert finding.regressed
    assert finding.shift_night == "2026-10-28"
    assert finding.change_pct == 12.0
    assert "since 2026-10-28" in finding.reason


def test_a_12_percent_step_on_a_slightly_noisy_series_fails_too():
    history = noisy(100, 27, 0.02, seed=1) + noisy(112, 3, 0.01, seed=2)
    finding = detect("p95_ms", history, NIGHTS)
    assert finding.regressed and finding.shift_night == "2026-10-28"


def test_a_step_held_longer_still_names_its_first_night():
    history = noisy(100, 24, 0.02, seed=3) + noisy(115, 6, 0.01, seed=4)
    finding = detect("p99_ms", history, NIGHTS)
    assert finding.regressed and finding.shift_night == "2026-10-25"


def test_the_step_held_only_two_nights_does_not_fail_yet():
    finding = detect("p95_ms", [100.0] * 28 + [112.0] * 2, NIGHTS)
    assert not finding.regressed
    assert finding.vs_last7_pct == 12.0  # still shown against the last 7 nights


def test_a_single_30_percent_spike_does_not_fail():
    for spike_at in (29, 20):  # last night, or a night in the middle
        history = [100.0] * 30
        history[spike_at] = 130.0
        assert not detect("p95_ms", history, NIGHTS).regressed


def test_plus_minus_8_percent_noise_for_30_nights_does_not_fail():
    for seed in range(50):
        finding = detect("p95_ms", noisy(100, 30, 0.08, seed), NIGHTS)
        assert not finding.regressed, (seed, finding)


def test_throughput_regresses_downwards():
    finding = detect("throughput_rps", [1000.0] * 27 + [850.0] * 3, NIGHTS)
    assert finding.regressed and finding.shift_night == "2026-10-28"
    assert not detect("throughput_rps", [1000.0] * 27 + [1150.0] * 3, NIGHTS).regressed


def test_an_improvement_is_not_a_regression():
    assert not detect("p95_ms", [100.0] * 27 + [80.0] * 3, NIGHTS).regressed


def test_too_short_a_history_is_reported_not_judged():
    finding = detect("p95_ms", [100.0, 150.0, 150.0], NIGHTS[:3])
    assert not finding.regressed and "too few" in finding.reason


def test_the_baseline_command_fails_on_a_regression_and_names_its_first_night(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from chaosmessaging.nightly import history

    path = tmp_path / "history.json"
    for night, p95 in zip(NIGHTS, [100.0] * 27 + [112.0] * 3):
        history.append(
            path,
            night,
            "nightly",
            {"message_soak.soak.p95_ms": p95, "message_soak.soak.throughput_rps": 500.0},
        )
    cli = str(Path(sys.executable).with_name("chaosmessaging"))
    proc = subprocess.run(
        [cli, "baseline", "--history", str(path), "--profile", "nightly"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REGRESSED message_soak.soak.p95_ms" in proc.stdout
    assert "since 2026-10-28" in proc.stdout and "1 regression(s) over 30 nights" in proc.stdout
    history.append(path, "2026-10-31", "nightly", {"message_soak.soak.p95_ms": 100.0})
    history.append(path, "2026-11-01", "nightly", {"message_soak.soak.p95_ms": 100.0})
    proc = subprocess.run(
        [cli, "baseline", "--history", str(path), "--profile", "nightly"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout  # the shift did not hold: no longer a regression

"""Configuration is validated before anything happens; targets outside loopback are refused
before any socket opens; passwords are hidden whatever characters they hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosmessaging import targets
from chaosmessaging.config import redact
from chaosmessaging.controls.validation import configuration_errors

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
CHAOS = str(Path(sys.executable).with_name("chaos"))


def _experiment(name: str) -> dict:
    return json.loads((EXPERIMENTS / f"{name}.json").read_text())


def _errors(name: str, **overrides) -> list[str]:
    experiment = _experiment(name)
    return configuration_errors(experiment, {**experiment["configuration"], **overrides})


def test_every_experiment_is_valid_in_both_profiles():
    """Smoke (the experiments' own values), nightly, and the shortened nightly of
    benchmarks/nightly-short.json (docs/performance.md)."""
    profiles = [
        EXPERIMENTS / "profiles" / "nightly.json",
        ROOT / "benchmarks" / "nightly-short.json",
    ]
    for path in EXPERIMENTS.glob("*.json"):
        experiment = json.loads(path.read_text())
        assert configuration_errors(experiment, experiment["configuration"]) == [], path.name
        for profile in profiles:
            values = json.loads(profile.read_text())["configuration"]
            merged = {**experiment["configuration"], **values}
            assert configuration_errors(experiment, merged) == [], (path.name, profile.name)


def test_every_matrix_experiment_is_valid_in_both_profiles():
    """The platform experiments (experiments/matrix/) name activities that exist, with values
    their limits accept, in the smoke defaults and in their nightly profile."""
    from chaoslib.configuration import load_configuration

    folder = EXPERIMENTS / "matrix"
    nightly = json.loads((folder / "profiles" / "nightly.json").read_text())["configuration"]
    paths = sorted(folder.glob("*.json"))
    assert paths
    for path in paths:
        experiment = json.loads(path.read_text())
        smoke = load_configuration(experiment["configuration"])
        assert configuration_errors(experiment, smoke) == [], path.name
        merged = load_configuration({**experiment["configuration"], **nightly})
        assert configuration_errors(experiment, merged) == [], path.name


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"t9_rate": "fast"}, "rate must be a whole number, got t9_rate='fast'"),
        ({"t9_rate": -5}, "rate must be greater than 0, got t9_rate=-5"),
        ({"t9_rate": 0}, "rate must be greater than 0, got t9_rate=0"),
        ({"t9_messages": 2.5}, "total_messages must be a whole number"),
        (
            {"t9_settle_timeout_s": "90s"},
            "settle_timeout must be a number, got t9_settle_timeout_s=",
        ),
        ({"t9_partition_after_s": "soon"}, "pause before must be a non-negative number"),
        ({"t9_recovery_limit_s": -1}, "limit_seconds must be greater than 0"),
    ],
)
def test_bad_values_are_named_with_the_parameter(overrides, expected):
    errors = _errors("redis_partition", **overrides)
    assert any(expected in e for e in errors), errors


def test_negative_latency_zero_duration_and_undefined_keys_are_errors():
    assert any(
        "latency_ms must not be negative" in e
        for e in _errors("redis_latency", lat_latency_ms=-200)
    )
    soak = _experiment("message_soak")
    load = next(a for a in soak["method"] if a["name"] == "start-message-load")
    load["provider"]["arguments"]["duration"] = 0
    errors = configuration_errors(soak, soak["configuration"])
    assert any("duration must be greater than 0" in e for e in errors), errors
    config = dict(_experiment("redis_latency")["configuration"])
    del config["lat_rate"]
    errors = configuration_errors(_experiment("redis_latency"), config)
    assert any("${lat_rate}, which the configuration does not define" in e for e in errors)


def test_configured_target_outside_loopback_is_an_error_unless_allowed(monkeypatch):
    monkeypatch.setenv("CHAOSMESSAGING_API_URL", "http://10.255.255.1:8080")
    assert any("messaging_api_url points at 10.255.255.1" in e for e in _errors("redis_latency"))
    assert _errors("redis_latency", allow_hosts="10.0.0.0/8") == []


@pytest.mark.parametrize(
    "target,allowed",
    [
        ("http://127.0.0.1:1/x", True),
        ("http://localhost:1", True),
        ("http://[::1]:1", True),
        ("postgresql://u:p@127.0.0.2:5432/db", True),
        ("host=/tmp/sock dbname=x", True),
        ("http://10.1.2.3:8080", False),
        ("redis://:pw@example.com:6379/0", False),
        ("host=10.0.0.5 user=app dbname=x", False),
        ("postgresql://u@db.internal/x", False),
    ],
)
def test_target_check(target, allowed, monkeypatch):
    monkeypatch.delenv(targets.ALLOW_ENV, raising=False)
    if allowed:
        assert targets.check(target, "t") == target
    else:
        with pytest.raises(ActivityFailed, match="not loopback"):
            targets.check(target, "t")
        assert targets.check(target, "t", {"allow_hosts": [targets.host_of(target)]}) == target


@pytest.mark.parametrize("password", ["p@ss", "p:ss", "p/ss", "p%2Fss%40x", "a@b:c/d%e", "@@::"])
@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "redis", "rediss", "http", "amqp"])
def test_passwords_with_special_characters_never_show(scheme, password):
    url = f"{scheme}://app:{password}@127.0.0.1:5432/db"
    shown = redact(f"cannot connect to {url}: refused")
    assert password not in shown and "app:***@127.0.0.1:5432/db" in shown, shown
    assert "s3cr3t" not in redact("host=127.0.0.1 user=app password=s3cr3t dbname=x")
    assert redact(f"redis://:{password}@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"


AUDIT = textwrap.dedent("""
    import os, sys, ipaddress
    _log = os.environ["CONNECT_LOG"]
    def _hook(event, args):
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else str(address)
            with open(_log, "a") as out:
                out.write(f"{host}\\n")
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    raise RuntimeError(f"test guard: connection to {host} blocked")
            except ValueError:
                pass
    sys.addaudithook(_hook)
""")


@pytest.mark.slow
def test_bad_value_or_foreign_target_stops_the_run_before_any_socket_or_fault(tmp_path):
    """Through the real `chaos` CLI: a wrong profile value and a 10.x API address each end the run
    as a configuration error — journal 'failed', not deviated, parameter named — with no stack
    started, no fault or load recorded, and no socket opened outside loopback."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(AUDIT)
    connects = tmp_path / "connects.log"
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "site"),
        "CONNECT_LOG": str(connects),
        "CHAOSMESSAGING_HOME": str(home),
    }
    cases = [
        (["--var", "t9_rate:str=fast"], {}, "t9_rate='fast'"),
        ([], {"CHAOSMESSAGING_API_URL": "http://10.255.255.1:8080"}, "10.255.255.1"),
    ]
    for extra, more_env, named in cases:
        journal = tmp_path / "journal.json"
        proc = subprocess.run(
            [
                CHAOS,
                "--log-file",
                str(tmp_path / "chaos.log"),
                "run",
                "--journal-path",
                str(journal),
                *extra,
                str(EXPERIMENTS / "redis_partition.json"),
            ],
            env={**env, **more_env},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        data = json.loads(journal.read_text())
        assert data["status"] == "failed" and data["deviated"] is False
        errors = data["chaosmessaging_configuration_error"]["errors"]
        assert any(named in e for e in errors), errors
        assert data["steady_states"]["before"] is None and data["run"] == []
        assert data["rollbacks"] == []
        assert "configuration error" in (tmp_path / "chaos.log").read_text()
        assert not (home / "stack.json").exists(), "no stack may start on a configuration error"
        assert (
            not (home / "faults.json").exists()
            or json.loads((home / "faults.json").read_text())["faults"] == []
        )
    seen = connects.read_text().split() if connects.exists() else []
    assert "10.255.255.1" not in seen, seen


def test_activities_refuse_bad_values_themselves_before_any_traffic(tmp_path, monkeypatch):
    """Called without the control (another tool, a hand-written experiment), the activities
    still refuse: a zero duration never silently becomes 30 s, a negative rate is named as the
    rate, a negative latency is refused before the Toxiproxy API is called."""
    from chaosmessaging.actions import load, toxiproxy

    monkeypatch.setenv("CHAOSMESSAGING_HOME", str(tmp_path))
    with pytest.raises(ActivityFailed, match="duration must be above 0"):
        load.start_load(rate=1, duration=0, api_url="http://127.0.0.1:9")
    with pytest.raises(ActivityFailed, match="rate must be a whole number .* above 0, got -5"):
        load.start_load(rate=-5, total_messages=100, api_url="http://127.0.0.1:9")
    with pytest.raises(ActivityFailed, match="rate must be a whole number, got 'fast'"):
        load.start_load(rate="fast", duration="1s", api_url="http://127.0.0.1:9")
    with pytest.raises(ActivityFailed, match="latency_ms must be a non-negative"):
        toxiproxy.add_latency("redis", -200, url="http://127.0.0.1:9")


def test_a_fleet_of_slow_readers_only_is_refused_its_latency_would_be_judged_on_nothing():
    """Slow readers' latency is not judged; with every device slow the delivery p95 of T5 would
    pass with no evidence (the nightly profile did so, 10 slow devices of 10)."""
    assert _errors("large_payload", t5_users=10, t5_slow_devices=9) == []
    errors = _errors("large_payload", t5_users=10, t5_slow_devices=10)
    assert any("slow_devices=10 leaves no device" in e for e in errors), errors

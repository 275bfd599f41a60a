"""The k6 scripts take every tunable from the environment (k6 inspect, no load sent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

K6 = str(Path(sys.executable).parent / "k6")
SCRIPTS = Path(__file__).resolve().parents[1] / "k6"


def _options(script: str, **env) -> dict:
    cmd = [K6, "inspect", "--include-system-env-vars=false"]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    out = subprocess.run(cmd + [str(SCRIPTS / script)], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(out.stderr or out.stdout)
    return json.loads(out.stdout)


def test_message_load_scenario_and_thresholds_come_from_env():
    options = _options(
        "message_load.js",
        RATE=250,
        DURATION="90s",
        VUS=30,
        MAX_VUS=100,
        P95_MS=300,
        MAX_ERROR_RATE=0.001,
    )
    scenario = options["scenarios"]["messages"]
    assert scenario["executor"] == "constant-arrival-rate"
    assert (scenario["rate"], scenario["timeUnit"], scenario["duration"]) == (250, "1s", "1m30s")
    assert (scenario["preAllocatedVUs"], scenario["maxVUs"]) == (30, 100)
    assert options["thresholds"] == {
        "http_req_duration": ["p(95)<300"],
        "http_req_failed": ["rate<0.001"],
    }


def test_message_load_has_no_hidden_thresholds_and_sane_vu_defaults():
    options = _options("message_load.js", RATE=100)
    assert not options.get("thresholds")
    scenario = options["scenarios"]["messages"]
    assert scenario["preAllocatedVUs"] == 10 and scenario["maxVUs"] == 40


def test_message_load_rejects_a_malformed_rate():
    with pytest.raises(RuntimeError, match="RATE must be an integer"):
        _options("message_load.js", RATE="fast")

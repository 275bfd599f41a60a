"""A password in a DSN or URL given through configuration (env) never reaches the journal, the
chaos log or the stack's files, even when the activities using it fail and report the address."""

import json
import os
import subprocess
import sys
from pathlib import Path

from chaosmessaging.stack.servers import free_port

CHAOS = str(Path(sys.executable).with_name("chaos"))
SECRET = "s3cr3t-Pa55"


def test_failed_activities_redact_passwords_from_configuration(tmp_path):
    dead = free_port()
    experiment = {
        "version": "1.0.0",
        "title": "secrets stay secret",
        "description": "d",
        "configuration": {
            "chaosmessaging_home": str(tmp_path / "home"),
            "messaging_pg_dsn": {"type": "env", "key": "CHAOSMESSAGING_PG_DSN"},
            "messaging_redis_url": {"type": "env", "key": "CHAOSMESSAGING_REDIS_URL"},
            "toxiproxy_url": {"type": "env", "key": "CHAOSMESSAGING_TOXIPROXY_URL"},
        },
        "method": [
            {
                "type": "probe",
                "name": "outbox",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.probes.postgres",
                    "func": "outbox_backlog",
                },
            },
            {
                "type": "probe",
                "name": "pel",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.probes.redis",
                    "func": "pel_count",
                },
            },
            {
                "type": "action",
                "name": "latency",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.actions.toxiproxy",
                    "func": "add_latency",
                    "arguments": {"proxy": "redis", "latency_ms": 10},
                },
            },
        ],
    }
    path = tmp_path / "e.json"
    path.write_text(json.dumps(experiment))
    env = {
        **os.environ,
        "CHAOSMESSAGING_PG_DSN": f"postgresql://app:{SECRET}@127.0.0.1:{dead}/messaging",
        "CHAOSMESSAGING_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{dead}/0",
        "CHAOSMESSAGING_TOXIPROXY_URL": f"http://admin:{SECRET}@127.0.0.1:{dead}",
    }
    journal, log = tmp_path / "journal.json", tmp_path / "chaos.log"
    subprocess.run(
        [CHAOS, "--log-file", str(log), "run", "--journal-path", str(journal), str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = journal.read_text()
    outputs = [r["exception"] for r in json.loads(text)["run"] if r.get("exception")]
    assert len(outputs) == 3, "each activity should have failed (unreachable targets)"
    assert "app:***@" in text  # the DSN is named, redacted, so the user knows which one
    for artefact in (journal, log, *Path(tmp_path / "home").glob("**/*.json")):
        assert SECRET not in artefact.read_text(), artefact

"""`chaos report` renders a journal as HTML on a fresh machine (pandoc comes from
pypandoc-binary), as the README promises."""

import json
import subprocess
import sys
from pathlib import Path

CHAOS = str(Path(sys.executable).with_name("chaos"))


def test_chaos_report_renders_a_journal_to_html(tmp_path):
    experiment = {
        "version": "1.0.0",
        "title": "report smoke title",
        "description": "d",
        "steady-state-hypothesis": {
            "title": "h",
            "probes": [
                {
                    "type": "probe",
                    "name": "cwd-exists",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "os.path",
                        "func": "isdir",
                        "arguments": {"s": str(tmp_path)},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "noop",
                "provider": {"type": "python", "module": "os", "func": "getpid"},
            }
        ],
    }
    (tmp_path / "e.json").write_text(json.dumps(experiment))
    journal, html = tmp_path / "journal.json", tmp_path / "report.html"
    run = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(tmp_path / "e.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = subprocess.run(
        [CHAOS, "--no-log-file", "report", "--export-format=html", str(journal), str(html)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    text = html.read_text()
    assert "<html" in text.lower() and "report smoke title" in text

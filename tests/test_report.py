"""`chaos report` renders a journal as HTML on a fresh machine (pandoc comes from
pypandoc-binary), as the README promises; this project's journals as a page that says why each
verdict held or broke (`chaosmessaging.report`)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def _verdict_probe(name: str, marker: Path, reason_ok: str, reason_broken: str) -> dict:
    return {
        "type": "probe",
        "name": name,
        "tolerance": {"type": "jsonpath", "path": "$.ok", "expect": True},
        "provider": {
            "type": "python",
            "module": "reportprobe",
            "func": "judge",
            "arguments": {
                "marker": str(marker),
                "reason_ok": reason_ok,
                "reason_broken": reason_broken,
            },
        },
    }


REPORT_PROBES = """
from pathlib import Path


def judge(marker, reason_ok, reason_broken):
    broken = Path(marker).exists()
    return {"ok": not broken, "reason": reason_broken if broken else reason_ok,
            "p95_ms": 142.5 if broken else 12.25, "limit_ms": 100}


def break_it(marker):
    Path(marker).write_text("broken")


def heal(target):
    from chaosmessaging import faults

    return len(faults.clear(target))
"""


@pytest.mark.slow
def test_our_journal_reports_each_verdict_with_its_reason_offline_and_ungarbled(tmp_path):
    """A real `chaos run` of an experiment with this project's controls (two `$.ok` tolerances,
    the pattern pandoc read as TeX math), a fault recorded in the ledger by the method and
    cleared by a rollback, then `chaos report --export-format=html`."""
    (tmp_path / "reportprobe.py").write_text(REPORT_PROBES)
    marker = tmp_path / "broken"
    experiment = {
        "version": "1.0.0",
        "title": "report of a deviated run",
        "description": "costs $5 and $6: no math here",
        "controls": [
            {
                "name": "report",
                "provider": {"type": "python", "module": "chaosmessaging.controls.report"},
            }
        ],
        "steady-state-hypothesis": {
            "title": "fast and complete",
            "probes": [
                _verdict_probe("first-verdict", tmp_path / "never", "all 10 delivered", "lost 3"),
                _verdict_probe(
                    "second-verdict", marker, "p95 12.25 ms within 100 ms", "p95 142.5 ms over 100"
                ),
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "inject-fault",
                "provider": {
                    "type": "python",
                    "module": "chaosmessaging.faults",
                    "func": "record",
                    "arguments": {"kind": "toxic", "target": "toxiproxy:redis", "revert": {}},
                },
                "pauses": {"after": 1},
            },
            {
                "type": "action",
                "name": "break-it",
                "provider": {
                    "type": "python",
                    "module": "reportprobe",
                    "func": "break_it",
                    "arguments": {"marker": str(marker)},
                },
            },
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "heal",
                "provider": {
                    "type": "python",
                    "module": "reportprobe",
                    "func": "heal",
                    "arguments": {"target": "toxiproxy:redis"},
                },
            }
        ],
    }
    (tmp_path / "e.json").write_text(json.dumps(experiment))
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "CHAOSMESSAGING_HOME": str(tmp_path / "home"),
    }
    journal, page = tmp_path / "journal.json", tmp_path / "report.html"
    run = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(tmp_path / "e.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    data = json.loads(journal.read_text())
    assert data["deviated"], run.stdout + run.stderr
    (window,) = data["chaosmessaging_report"]["fault_windows"]
    assert window["kind"] == "toxic" and window["reverted_at"] > window["injected_at"]
    report = subprocess.run(
        [CHAOS, "--no-log-file", "report", "--export-format=html", str(journal), str(page)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    text = page.read_text()
    # why: every verdict, before and after, with its reason and figures
    for reason in ("all 10 delivered", "p95 12.25 ms within 100 ms", "p95 142.5 ms over 100"):
        assert reason in text, reason
    assert text.count("<code>second-verdict</code>") == 2
    assert text.count("<code>first-verdict</code>") == 2
    assert "NOT held" in text and "deviated" in text and "second-verdict" in text
    assert "<code>p95_ms</code> = 142.5" in text
    # a time line with the fault window and the activities
    assert "<svg" in text and "fault toxic toxiproxy:redis" in text and "action break-it" in text
    # nothing read as TeX math, no generic contribution chart, nothing fetched from the network
    assert 'class="math' not in text and "$5 and $6" in text.replace("&#36;", "$")
    assert "Contributions" not in text and "pygal" not in text
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)

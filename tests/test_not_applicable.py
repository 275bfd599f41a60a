"""A criterion the platform cannot support is "n/a" with its reason at run time, in the journal's
criteria and on the dashboard: never passed, never failed (no server needed: the platform file
alone decides, before any request)."""

from __future__ import annotations

from pathlib import Path

import yaml

from chaosmessaging.nightly.dashboard import _criteria_table
from chaosmessaging.nightly.journal import criteria, verdict_of
from chaosmessaging.probes import accounting, delivery, metrics, trends
from chaosmessaging.resources import bundled


def _platform(tmp_path: Path, change) -> dict:
    doc = yaml.safe_load((bundled("platforms") / "reference.yaml").read_text())
    change(doc)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return {"platform": str(path), "chaosmessaging_home": str(tmp_path)}


def test_delivery_and_ledger_verdicts_are_na_on_a_platform_without_them(tmp_path):
    config = _platform(tmp_path, lambda d: (d.pop("delivery"), d.pop("evidence")))
    seen = delivery.websocket_delivery(configuration=config)
    assert seen == {
        "ok": True,
        "reason": "n/a: the platform file describes no delivery channel (delivery:)",
        "applies": False,
    }
    ledger = accounting.message_accounting(configuration=config)
    assert ledger["applies"] is False and "describes no evidence" in ledger["reason"]


def test_a_metric_role_mapped_to_null_makes_metric_verdicts_na(tmp_path):
    def no_overload(doc):
        doc["metrics"]["ws_overload_total"] = None
        del doc["metrics"]["process_resident_memory_bytes"]

    config = _platform(tmp_path, no_overload)
    grew = metrics.counter_grew_at_most(since="x", name="ws_overload_total", configuration=config)
    assert grew["applies"] is False and grew["ok"] is True
    assert "metrics.ws_overload_total" in grew["reason"]
    memory = trends.memory_growth_within(label="x", max_percent=5, configuration=config)
    assert memory["applies"] is False and "process_resident_memory_bytes" in memory["reason"]


def test_journal_and_dashboard_report_na_apart_from_met_and_failed():
    def probe(name, output, met):
        return {"activity": {"name": name}, "output": output, "tolerance_met": met}

    journal = {
        "status": "completed",
        "deviated": False,
        "steady_states": {
            "after": {
                "probes": [
                    probe(
                        "leak-free",
                        {"ok": True, "reason": "n/a: no delivery", "applies": False},
                        True,
                    ),
                    probe("zero-loss", {"ok": True, "reason": "all 10 delivered"}, True),
                ]
            }
        },
    }
    rows = criteria(journal)
    assert [(c["name"], c["ok"], c["applies"]) for c in rows] == [
        ("leak-free", True, False),
        ("zero-loss", True, True),
    ]
    assert verdict_of(journal, 0) == (True, "")
    html = _criteria_table({"name": "mixed_load", "criteria": rows})
    assert ">n/a</td>" in html and "data-applies='false'" in html
    assert html.count(">met</td>") == 1

"""docs/activities.md is what `chaos discover` says today (regenerate with
`python -m chaosmessaging.docs > docs/activities.md`)."""

from pathlib import Path

from chaosmessaging.docs import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "activities.md"


def test_activity_reference_is_up_to_date():
    assert DOC.read_text() == render(), (
        "docs/activities.md is stale: python -m chaosmessaging.docs > docs/activities.md"
    )


def test_reference_lists_every_experiment_activity():
    import json

    text = DOC.read_text()
    for path in (DOC.parents[1] / "experiments").glob("*.json"):
        experiment = json.loads(path.read_text())
        activities = (
            experiment["method"]
            + experiment.get("rollbacks", [])
            + experiment["steady-state-hypothesis"]["probes"]
        )
        for activity in activities:
            assert f"`{activity['provider']['func']}`" in text, (path.name, activity["name"])

"""Render the extension's activities (what `chaos discover chaosmessaging` reports) as Markdown.

`python -m chaosmessaging.docs > docs/activities.md` regenerates the reference; a test keeps the
committed file in step with the code.
"""

from __future__ import annotations

import itertools
import sys

from chaosmessaging import load_exported_activities

__all__ = ["render"]

_SKIP_ARGS = {"configuration", "secrets"}


def _argument(arg: dict) -> str:
    text = f"`{arg['name']}`"
    if "default" in arg:
        text += f"={arg['default']!r}"
    return text


def render() -> str:
    lines = [
        "# Activities",
        "",
        "Generated from `chaos discover chaosmessaging` by `python -m chaosmessaging.docs`;"
        " do not edit by hand. Every activity also takes `configuration` and `secrets`"
        " (see docs/architecture.md for the configuration keys).",
        "",
    ]
    activities = sorted(load_exported_activities(), key=lambda a: (a["mod"], a["name"]))
    for module, group in itertools.groupby(activities, key=lambda a: a["mod"]):
        lines += [
            f"## `{module}`",
            "",
            "| type | function | arguments | what it does |",
            "|---|---|---|---|",
        ]
        for activity in group:
            args = ", ".join(
                _argument(a) for a in activity.get("arguments", []) if a["name"] not in _SKIP_ARGS
            )
            doc = " ".join((activity.get("doc") or "").split()).replace("|", "\\|")
            lines.append(f"| {activity['type']} | `{activity['name']}` | {args} | {doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())

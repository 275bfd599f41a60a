#!/usr/bin/env python3
"""Write experiments and profiles in the project's JSON style: 2-space indent, and any object or
array that fits on one line of at most 100 characters kept on one line (a probe's `provider` or
`tolerance` reads at a glance). `--check` exits 1 when a file is not in that style.

Usage: scripts/format_experiments.py [--check] [FILE ...]   (default: experiments/**/*.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WIDTH = 100


def dumps(value, indent: int = 0, used: int = 0) -> str:
    """`value` as JSON whose first line starts at column `used` (nested lines at `indent`)."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or used + len(flat) + 1 <= WIDTH or not value:
        return flat
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, list):
        items = [inner + dumps(v, indent + 2, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = [
        f"{inner}{json.dumps(k)}: {dumps(v, indent + 2, indent + 4 + len(json.dumps(k)))}"
        for k, v in value.items()
    ]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    files = [Path(a) for a in argv if a != "--check"] or sorted(
        Path(__file__).resolve().parents[1].glob("experiments/**/*.json")
    )
    bad = []
    for path in files:
        text = path.read_text()
        wanted = dumps(json.loads(text)) + "\n"
        if text != wanted:
            bad.append(path)
            if not check:
                path.write_text(wanted)
    if check and bad:
        print(
            "not in the experiments' JSON style (run scripts/format_experiments.py):",
            *map(str, bad),
            sep="\n  ",
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

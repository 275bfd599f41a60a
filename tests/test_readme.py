"""The README's activity table names every activity module and every activity `chaos discover`
lists (a shorthand such as `kill/stop/start_container` counts for each of its names)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import chaosmessaging.actions
import chaosmessaging.probes

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows() -> dict[str, set[str]]:
    rows = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| `((?:actions|probes)\.\w+)` \| (.*) \|$", line)
        if not match:
            continue
        names = set()
        for name in re.findall(r"`([^`]+)`", match.group(2)):
            short = re.fullmatch(r"([\w/]+/\w+)_(\w+)", name)
            if short:
                names |= {f"{p}_{short.group(2)}" for p in short.group(1).split("/")}
            else:
                names.add(name)
        rows[match.group(1)] = names
    return rows


def test_the_activity_table_lists_every_module_and_activity():
    rows = _rows()
    missing = []
    for package, prefix in ((chaosmessaging.actions, "actions"), (chaosmessaging.probes, "probes")):
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):  # private engines: `chaos discover` skips them too
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            key = f"{prefix}.{info.name}"
            listed = rows.get(key, set())
            missing += [f"{key}.{name}" for name in module.__all__ if name not in listed]
    assert missing == [], f"README activity table lacks: {missing}"

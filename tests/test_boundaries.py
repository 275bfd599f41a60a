"""The import rules of docs/architecture.md, read from the source (AST), so a violation fails
here rather than in a review:

- actions and probes never import each other (what both need lives in `chaosmessaging.clients`);
- the extension's activities never import the reference stack, which never imports the extension;
- actions, probes and controls never import the embedded launcher's process code except the
  state file (`chaosmessaging.stack.state`/`control`, which the process actions drive).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("chaosmessaging.actions", ("chaosmessaging.probes", "msgstack")),
        ("chaosmessaging.probes", ("chaosmessaging.actions", "msgstack")),
        ("chaosmessaging.clients", ("chaosmessaging.actions", "chaosmessaging.probes", "msgstack")),
        ("chaosmessaging.controls", ("msgstack",)),
        # wiring runs downhill: the platform file's package below the clients and the catalogue
        # of needs, the launcher below the target backends, the evidence below the probes
        ("chaosmessaging.platform", ("chaosmessaging.clients", "chaosmessaging.needs")),
        ("chaosmessaging.stack", ("chaosmessaging.backends",)),
        ("chaosmessaging.evidence", ("chaosmessaging.probes", "chaosmessaging.actions")),
        ("msgstack", ("chaosmessaging",)),
    ],
)
def test_package_never_imports(package, forbidden):
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    }
    assert not offenders, sorted(offenders)


def test_probes_package_docstring_names_every_module():
    package = ROOT / "chaosmessaging" / "probes"
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    public = sorted(p.stem for p in package.glob("*.py") if not p.stem.startswith("_"))
    missing = [name for name in public if f"`{name}`" not in doc]
    assert not missing, f"chaosmessaging/probes/__init__.py does not describe {missing}"


def test_the_embedded_stack_never_imports_the_configuration_module():
    """Wiring runs downhill: `config` reads the stack's state file; the launcher is given its
    settings (`launcher.Settings`) and never imports `config` back."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in _modules("chaosmessaging.stack")
        if any(name.startswith("chaosmessaging.config") for name in _imports(path))
    ]
    assert offenders == []


def test_the_fault_ledger_imports_no_action_module():
    """A fault record names its reverter; the ledger needs no import side effect."""
    imports = _imports(ROOT / "chaosmessaging" / "faults.py")
    assert not [name for name in imports if name.startswith("chaosmessaging.actions")]


# The raw-pool road: PostgreSQL work that bypasses the storage adapter (msgstack/storage/, its
# bounded wait, retries, breaker and pool accounting). Only the storage layer and db.py (which
# creates the pools) may take it, plus the places listed here, which still do (issue 20, item 1:
# the pipeline services and the readiness checks are not moved yet). The list may only shrink.
RAW_POOL_CALLS = {"acquire", "fetch", "fetchrow", "fetchval", "execute", "executemany"}
RAW_DB_ROADS = {"as_user", "retrying"}
RAW_POOL_ALLOWED = {
    "msgstack/consumer.py": 1,
    "msgstack/dispatcher.py": 5,
    "msgstack/gateway.py": 2,
    "msgstack/health.py": 1,  # /readyz asks the pool itself whether PostgreSQL answers
}


def _raw_pool_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, name = node.func.value, node.func.attr
        on_pool = (isinstance(owner, ast.Attribute) and owner.attr == "pool") or (
            isinstance(owner, ast.Name) and owner.id == "pool"
        )
        if (on_pool and name in RAW_POOL_CALLS) or (
            isinstance(owner, ast.Name) and owner.id == "db" and name in RAW_DB_ROADS
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)}")
    return found


def test_msgstack_reaches_postgresql_through_the_storage_adapters():
    uses: dict[str, list[str]] = {}
    for path in _modules("msgstack"):
        relative = str(path.relative_to(ROOT))
        if relative.startswith("msgstack/storage/") or relative == "msgstack/db.py":
            continue
        found = _raw_pool_uses(path)
        if found:
            uses[relative] = found
    unexpected = {
        name: found for name, found in uses.items() if len(found) > RAW_POOL_ALLOWED.get(name, 0)
    }
    assert not unexpected, (
        "PostgreSQL work outside the storage layer (use res.storage.postgres.run, with "
        f"db.as_user_unit for the acting user's transaction): {unexpected}"
    )
    # the detector sees what it must: the known remaining raw roads are still found
    assert {name: len(found) for name, found in uses.items()} == RAW_POOL_ALLOWED, uses

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
# creates the pools) may take it (issue 20, item 1: nothing else does any more; the list of
# exceptions is empty and stays so).
RAW_POOL_CALLS = {"acquire", "fetch", "fetchrow", "fetchval", "execute", "executemany"}
RAW_DB_ROADS = {"as_user", "retrying"}
RAW_POOL_ALLOWED: dict[str, int] = {}
STORAGE_LAYER = ("msgstack/storage/", "msgstack/db.py", "msgstack/streams.py")

# The raw-Redis road, in the same style: a command sent on a client (`redis.get(...)`,
# `self.redis.xack(...)`, `client.publish(...)`) outside the storage layer. streams.py creates the
# clients; the services close theirs; a unit of work the adapters run gets the client under
# another name (`lambda r: r.xack(...)`), the adapter's timeout and breaker around it.
REDIS_OWNERS = {"redis", "client"}
REDIS_LIFECYCLE = {"aclose", "close"}


def _owner_name(owner: ast.expr) -> str | None:
    if isinstance(owner, ast.Attribute):
        return owner.attr
    if isinstance(owner, ast.Name):
        return owner.id
    return None


def _raw_uses(path: Path) -> tuple[list[str], list[str]]:
    """(raw PostgreSQL uses, raw Redis uses) in `path`."""
    pool, redis = [], []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, name = node.func.value, node.func.attr
        label = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        where = f"{label}:{node.lineno} {ast.unparse(node.func)}"
        if (_owner_name(owner) == "pool" and name in RAW_POOL_CALLS) or (
            isinstance(owner, ast.Name) and owner.id == "db" and name in RAW_DB_ROADS
        ):
            pool.append(where)
        if _owner_name(owner) in REDIS_OWNERS and name not in REDIS_LIFECYCLE:
            redis.append(where)
    return pool, redis


def _outside_the_storage_layer() -> dict[str, tuple[list[str], list[str]]]:
    uses = {}
    for path in _modules("msgstack"):
        relative = str(path.relative_to(ROOT))
        if not relative.startswith(STORAGE_LAYER):
            uses[relative] = _raw_uses(path)
    return uses


def test_msgstack_reaches_postgresql_through_the_storage_adapters():
    uses = {name: pool for name, (pool, _) in _outside_the_storage_layer().items() if pool}
    unexpected = {
        name: found for name, found in uses.items() if len(found) > RAW_POOL_ALLOWED.get(name, 0)
    }
    assert not unexpected, (
        "PostgreSQL work outside the storage layer (use res.storage.postgres.run, with "
        f"db.as_user_unit for the acting user's transaction): {unexpected}"
    )
    assert {name: len(found) for name, found in uses.items()} == RAW_POOL_ALLOWED, uses


def test_msgstack_reaches_redis_through_the_storage_adapters():
    uses = {name: redis for name, (_, redis) in _outside_the_storage_layer().items() if redis}
    assert not uses, (
        "Redis commands outside the storage layer (use res.storage.stream.run for streams, "
        f"res.storage.cache.run for keys and pub/sub): {uses}"
    )


def test_the_raw_road_detectors_see_what_they_must(tmp_path):
    """The detectors find each shape of the raw roads (and leave the adapters' units alone)."""
    sample = tmp_path / "raw_road_sample.py"
    source = """
async def raw(self, res, pool, redis, client, db):
    await pool.fetch("SELECT 1")
    await res.pool.execute("SELECT 1")
    async with self.pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    await db.retrying(pool, lambda c: c.fetch("SELECT 1"))
    await redis.get("k")
    await self.res.redis.xack("s", "g", "1-0")
    await client.publish("channel", "m")
    await client.aclose()
    await res.storage.postgres.run(lambda c: c.fetch("SELECT 1"))
    await res.storage.stream.run(lambda r: r.xack("s", "g", "1-0"))
"""
    sample.write_text(source)
    pool, redis = _raw_uses(sample)
    calls = [use.split(" ", 1)[1] for use in pool]
    assert calls == ["pool.fetch", "res.pool.execute", "self.pool.acquire", "db.retrying"], pool
    calls = [use.split(" ", 1)[1] for use in redis]
    assert calls == ["redis.get", "self.res.redis.xack", "client.publish"], redis

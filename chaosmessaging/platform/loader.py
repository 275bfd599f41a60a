"""Read a platform file (YAML or JSON), interpolate ``${VAR:-default}``, validate it.

Which file: the configuration key ``platform`` (Chaos Toolkit configuration or secrets), else the
environment variable ``CHAOSMESSAGING_PLATFORM``, else the shipped reference platform
(``platforms/reference.yaml``). A relative path is read from the working directory.

Interpolation: ``${NAME}`` and ``${NAME:-default}`` in any string. A name the toolkit already
knows (``CHAOSMESSAGING_API_URL`` -> ``messaging_api_url``, see ``config.KEYS``) resolves exactly as
every activity resolves that key (secrets, configuration, environment, the running embedded stack,
its default), so an experiment's configuration and the platform file never disagree; any other
name reads the environment. Names that look like secrets (PASSWORD, SECRET, TOKEN, KEY,
CREDENTIAL) resolve in memory only: `public_document` keeps them as ``${NAME}`` for whoever writes
the platform out (k6 resolves them from its own process environment), and nothing here logs a
resolved value.
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from chaoslib.types import Configuration, Secrets
from pydantic import ValidationError

from chaosmessaging.platform.schema import Platform

__all__ = [
    "PLATFORM_ENV",
    "PlatformError",
    "is_secret_name",
    "load_platform",
    "platform_path",
    "public_document",
    "read_document",
    "write_resolved",
]

PLATFORM_ENV = "CHAOSMESSAGING_PLATFORM"
PLATFORM_KEY = "platform"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_SECRET = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


class PlatformError(ValueError):
    """A platform file that cannot be used; `errors` are ``field.path: what is wrong`` lines."""

    def __init__(self, path: str | Path, errors: list[str]) -> None:
        self.path = str(path)
        self.errors = errors
        shown = "; ".join(errors[:8]) + (f"; and {len(errors) - 8} more" if len(errors) > 8 else "")
        super().__init__(f"platform file {self.path}: {shown}")


def is_secret_name(name: str) -> bool:
    return bool(_SECRET.search(name))


def platform_path(configuration: Configuration = None, secrets: Secrets = None) -> Path:
    """The platform file this run uses (see the module docstring)."""
    from chaosmessaging.resources import bundled

    flat: dict[str, Any] = {}
    for key, value in (secrets or {}).items():
        flat.update(value) if isinstance(value, dict) else flat.__setitem__(key, value)
    chosen = flat.get(PLATFORM_KEY) or (configuration or {}).get(PLATFORM_KEY)
    chosen = chosen or os.environ.get(PLATFORM_ENV)
    if chosen:
        return Path(str(chosen)).expanduser()
    return bundled("platforms") / "reference.yaml"


def read_document(path: str | Path) -> dict:
    """The file's raw mapping (YAML or JSON; JSON is YAML), before interpolation. Parsed once
    per version of the file (probes poll it)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise PlatformError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
    return copy.deepcopy(_parsed(str(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=16)
def _parsed(name: str, mtime_ns: int, size: int) -> dict:
    path = Path(name)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlatformError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlatformError(path, [f"{where}not valid YAML/JSON ({problem})"]) from None
    if not isinstance(doc, dict):
        raise PlatformError(path, ["the file must hold a mapping (name, services, login, ...)"])
    return doc


def _resolver(configuration: Configuration, secrets: Secrets):
    from chaosmessaging.config import KEYS, lookup

    by_env = {env: key for key, (env, _, _) in KEYS.items()}

    def resolve(name: str) -> str | None:
        if name in by_env:
            value = lookup(by_env[name], configuration, secrets, required=False)
            return None if value in (None, "") else str(value)
        value = os.environ.get(name)
        return value if value not in (None, "") else None

    return resolve


def _interpolate(node: Any, resolve, where: str, errors: list[str], keep_secrets: bool) -> Any:
    if isinstance(node, dict):
        return {
            k: _interpolate(v, resolve, f"{where}.{k}" if where else str(k), errors, keep_secrets)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            _interpolate(v, resolve, f"{where}.{i}", errors, keep_secrets)
            for i, v in enumerate(node)
        ]
    if not isinstance(node, str) or "${" not in node:
        return node

    def one(match: re.Match) -> str:
        name, default = match["name"], match["default"]
        if keep_secrets and is_secret_name(name):
            return match[0]
        value = resolve(name)
        if value is None:
            if default is None:
                errors.append(f"{where}: ${{{name}}} is not set and has no default")
                return ""
            return default
        return value

    return _VAR.sub(one, node)


def _schema_errors(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        message = error["msg"].removeprefix("Value error, ")
        out.append(f"{loc or '(top level)'}: {message}")
    return out


def load_platform(
    path: str | Path | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Platform:
    """The validated platform of `path` (default: `platform_path`), every ``${VAR}`` resolved.

    Raises `PlatformError` whose lines name each field that is wrong."""
    path = Path(path) if path else platform_path(configuration, secrets)
    doc = read_document(path)
    errors: list[str] = []
    resolved = _interpolate(doc, _resolver(configuration, secrets), "", errors, False)
    if errors:
        raise PlatformError(path, errors)
    try:
        platform = Platform.model_validate(resolved)
    except ValidationError as exc:
        raise PlatformError(path, _schema_errors(exc)) from None
    object.__setattr__(platform, "_source", path)
    return platform


def public_document(
    path: str | Path | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """The platform as a normalized JSON-able mapping, validated, addresses resolved, every
    secret-looking ``${NAME}`` left as written (for k6, journals and logs)."""
    platform = load_platform(path, configuration, secrets)  # validates with secrets resolved
    path = Path(path) if path else platform_path(configuration, secrets)
    errors: list[str] = []
    public = _interpolate(read_document(path), _resolver(configuration, secrets), "", errors, True)
    normalized = Platform.model_validate(public).model_dump(mode="json", by_alias=True)
    normalized["name"] = platform.name
    return normalized


def write_resolved(
    target: str | Path,
    path: str | Path | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Path:
    """Write `public_document` as JSON to `target` (what k6's ``PLATFORM_FILE`` points at)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = public_document(path, configuration, secrets)
    target.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return target

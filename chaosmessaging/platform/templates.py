"""An operation of the platform file turned into a request, and values read out of its reply.

Placeholders are ``{name}`` (lower-case names): a string that is exactly one placeholder takes
the value as it is (a list stays a list, a number a number); inside a longer string the value is
written as text. A placeholder with no value is an error that names it, never an empty string
sent to a server. JSONPaths are read with jsonpath2 (the library chaostoolkit-lib's tolerances use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jsonpath2.path import Path as _JsonPath

from chaoslib.types import Configuration, Secrets

from chaosmessaging import targets
from chaosmessaging.platform.schema import Operation, Platform, SendAs

__all__ = ["Request", "extract", "find_all", "find_one", "render", "render_request"]

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class TemplateError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; say it plainly
        return str(self.args[0])


def render(node: Any, values: dict[str, Any], where: str = "") -> Any:
    """`node` with every ``{name}`` filled from `values` (see the module docstring)."""
    if isinstance(node, dict):
        return {k: render(v, values, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [render(v, values, f"{where}.{i}") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    whole = _PLACEHOLDER.fullmatch(node)
    if whole:
        return _value(whole[1], values, where)
    return _PLACEHOLDER.sub(lambda m: str(_value(m[1], values, where)), node)


def _value(name: str, values: dict[str, Any], where: str) -> Any:
    if name not in values:
        raise TemplateError(f"{where or 'template'}: no value for placeholder {{{name}}}")
    return values[name]


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    params: dict[str, Any]
    headers: dict[str, str]
    json: Any


def render_request(
    platform: Platform, op: Operation, values: dict[str, Any], token: str | None = None
) -> Request:
    """The HTTP request `op` describes, with `values` filled in and `token` sent as the platform's
    login says (header or query). Path values are URL-quoted."""
    quoted = {k: quote(str(v), safe="") if isinstance(v, str) else v for k, v in values.items()}
    path = render(op.path, quoted, "path")
    params = render(op.query, values, "query")
    headers = {"Content-Type": "application/json"} if op.body is not None else {}
    headers.update(render(op.headers, values, "headers"))
    if op.authenticated and token is not None:
        _send_token(platform.login.send_as, token, headers, params)
    body = None if op.body is None else render(op.body, values, "body")
    url = platform.services[op.service].url + path
    return Request(op.method, url, params, headers, body)


def service_address(
    name: str, url: str, configuration: Configuration = None, secrets: Secrets = None
) -> str:
    """`url`, the address the platform file gives service `name`, once the allow-list
    (`chaosmessaging.targets`) accepts it; refused as ``services.<name>.url``."""
    return targets.check(url, f"services.{name}.url", configuration, secrets)


def checked_request(
    platform: Platform,
    op: Operation,
    values: dict[str, Any],
    token: str | None,
    where: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Request:
    """`render_request`, once its URL passed the allow-list (refused naming `where`): every
    request to a platform's service is built here, so none reaches a refused host."""
    req = render_request(platform, op, values, token)
    targets.check(req.url, where, configuration, secrets)
    return req


def _send_token(send_as: SendAs, token: str, headers: dict, params: dict) -> None:
    if send_as.header:
        headers[send_as.header] = send_as.format.replace("{token}", token)
    else:
        params[send_as.query] = token


@lru_cache(maxsize=512)
def _compiled(path: str):
    return _JsonPath.parse_str(path)


def find_all(path: str, doc: Any) -> list[Any]:
    """Every value `path` (a JSONPath) selects in `doc`."""
    return [m.current_value for m in _compiled(path).match(doc)]


def find_one(path: str, doc: Any, default: Any = None) -> Any:
    """The first value `path` selects in `doc`, or `default`."""
    for match in _compiled(path).match(doc):
        return match.current_value
    return default


def extract(op: Operation, doc: Any) -> dict[str, Any]:
    """``{name: value}`` for each of the operation's `extract` JSONPaths (None when absent)."""
    return {name: find_one(path, doc) for name, path in op.extract.items()}

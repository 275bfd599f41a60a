"""`chaosmessaging check-platform`: can these experiments run against this platform?

Two parts. *Live checks* touch the platform read-only plus one login and one conversation round
trip (create, read, send one message, list, delete when described): each is a line with what was
asked and what came back. The *table* is derived, never hand-written: for each experiment, every
activity its method uses (a "(run)" row) and every criterion of its steady-state hypothesis is
matched against the requirements catalogue (`chaosmessaging.needs.catalogue`) and judged
runnable, needs <what to set>, or n/a (<why>). An experiment whose "(run)" row is not runnable
cannot run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from chaoslib.types import Configuration, Secrets

from chaosmessaging import targets
from chaosmessaging.util import http
from chaosmessaging.needs.catalogue import RUNNABLE, Status, assess, requirements_of
from chaosmessaging.platform.schema import Platform
from chaosmessaging.platform.templates import checked_request, extract, find_all, find_one

__all__ = ["Live", "Row", "experiment_rows", "format_table", "live_checks", "login"]

RUN = "(run)"
_VAR = re.compile(r"^\$\{([A-Za-z0-9_]+)\}$")


@dataclass(frozen=True)
class Live:
    check: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Row:
    experiment: str
    criterion: str
    status: Status


def _defaults(experiment: dict) -> dict[str, Any]:
    """The experiment's own configuration values (its smoke profile), env entries by default."""
    out = {}
    for key, value in (experiment.get("configuration") or {}).items():
        out[key] = value.get("default") if isinstance(value, dict) else value
    return out


def _substitute(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str) and (m := _VAR.match(node)) and m[1] in values:
        return values[m[1]]
    return node


def _combine(statuses: list[Status]) -> Status:
    na = [s.why for s in statuses if s.state == "n/a"]
    if na:
        return Status("n/a", na[0])
    needs = list(dict.fromkeys(s.why for s in statuses if s.state == "needs"))
    if needs:
        return Status("needs", "; ".join(needs))
    return RUNNABLE


def _judge(activity: dict, values: dict, platform, configuration, secrets, live) -> Status:
    provider = activity.get("provider") or {}
    if provider.get("type") != "python" or not str(provider.get("module", "")).startswith(
        "chaosmessaging."
    ):
        return RUNNABLE
    args = _substitute(provider.get("arguments") or {}, values)
    reqs = requirements_of(provider["module"], provider.get("func", ""), args)
    return _combine([assess(r, platform, configuration, secrets, live) for r in reqs])


def experiment_rows(
    path: Path,
    platform: Platform,
    configuration: Configuration = None,
    secrets: Secrets = None,
    live: dict[str, Status] | None = None,
) -> list[Row]:
    """The "(run)" row and one row per criterion of the experiment at `path`."""
    doc = json.loads(Path(path).read_text())
    name = Path(path).stem
    values = {**_defaults(doc), **(configuration or {})}
    method = [a for a in doc.get("method", []) if a.get("type") == "action"]
    run = _combine([_judge(a, values, platform, configuration, secrets, live) for a in method])
    rows = [Row(name, RUN, run)]
    for probe in (doc.get("steady-state-hypothesis") or {}).get("probes", []):
        status = _judge(probe, values, platform, configuration, secrets, live)
        if run.state != "runnable" and status.state == "runnable":
            status = Status(run.state, f"the experiment cannot run: {run.why}")
        rows.append(Row(name, probe.get("name", "?"), status))
    return rows


def _get(url: str, what: str, configuration, secrets) -> httpx.Response:
    targets.check(url, what, configuration, secrets)
    return http().get(url, timeout=5.0)


def _call(platform, op, values, token, configuration, secrets) -> httpx.Response:
    where = f"{op.method} {op.path}"
    req = checked_request(platform, op, values, token, where, configuration, secrets)
    return http().request(
        req.method, req.url, params=req.params, headers=req.headers, json=req.json, timeout=10.0
    )


def login(
    platform: Platform, user: str, password: str, n: int = 0, configuration=None, secrets=None
) -> tuple[str | None, dict, httpx.Response]:
    """One login as `user`: (token or None, the extracted values, the reply)."""
    values = {
        "user": user,
        "password": password,
        "n": n,
        "device_id": f"chaosmessaging-{uuid.uuid4().hex[:10]}",
    }
    op = platform.login.request
    reply = _call(platform, op, values, None, configuration, secrets)
    if reply.status_code not in op.ok:
        return None, {}, reply
    doc = reply.json()
    token = find_one(platform.login.token, doc)
    user_id = find_one(platform.login.user_id, doc) if platform.login.user_id else None
    return (None if token is None else str(token)), {"user_id": user_id}, reply


def live_checks(
    platform: Platform, configuration: Configuration = None, secrets: Secrets = None
) -> tuple[list[Live], dict[str, Status]]:
    """Read-only probes of every service, one login, one conversation round trip."""
    from chaosmessaging.config import lookup

    out: list[Live] = []
    for name, service in platform.services.items():
        for kind, path in (
            ("readiness", service.readiness.path if service.readiness else None),
            ("metrics", service.metrics.path if service.metrics else None),
        ):
            if path is None:
                continue
            try:
                r = _get(service.url + path, f"{name} {kind}", configuration, secrets)
                good = (
                    r.status_code in service.readiness.ready_status
                    if kind == "readiness"
                    else r.status_code == 200
                )
                out.append(Live(f"{name} {kind}", good, f"GET {path} -> HTTP {r.status_code}"))
            except (httpx.HTTPError, targets.TargetRefused) as exc:
                out.append(Live(f"{name} {kind}", False, f"GET {path}: {exc}"))
    prefix = lookup("messaging_loadtest_prefix", configuration, secrets)
    password = lookup("messaging_loadtest_password", configuration, secrets)
    user = platform.login.username.format(prefix=prefix, n=0)
    try:
        token, got, reply = login(platform, user, password, 0, configuration, secrets)
    except (httpx.HTTPError, targets.TargetRefused, ValueError) as exc:
        token, got, reply = None, {}, None
        out.append(Live("login", False, f"as {user}: {exc}"))
    if reply is not None:
        out.append(
            Live(
                "login",
                token is not None,
                f"as {user}: HTTP {reply.status_code}"
                + ("" if token else f" (no token at {platform.login.token})"),
            )
        )
    # "online": requirements that need a look at a live system (a proxy in front of a
    # dependency) take it, once each, while the table is built
    live = {"online": RUNNABLE, "login": RUNNABLE}
    if token is None:
        live["login"] = Status(
            "needs",
            "a working login (check login: in the platform file, the load-test users "
            "CHAOSMESSAGING_LOADTEST_PREFIX/_PASSWORD)",
        )
        return out, live
    out += _round_trip(platform, token, got, configuration, secrets)
    return out, live


def _round_trip(platform, token, got, configuration, secrets) -> list[Live]:
    out: list[Live] = []
    conv = platform.conversations
    title = f"check-platform {time.strftime('%Y%m%dT%H%M%S')}"
    values = {"title": title, "participants": [], **got}

    def step(name: str, op, extra: dict) -> dict | None:
        try:
            r = _call(platform, op, {**values, **extra}, token, configuration, secrets)
        except (httpx.HTTPError, KeyError, targets.TargetRefused) as exc:
            out.append(Live(name, False, f"{op.method} {op.path}: {exc}"))
            return None
        good = r.status_code in op.ok
        why = "" if good else f" {r.text[:160]}"
        out.append(Live(name, good, f"{op.method} {op.path} -> HTTP {r.status_code}{why}"))
        if not good:
            return None
        try:
            return extract(op, r.json()) if op.extract else {}
        except ValueError:
            return {}

    created = step("conversation create", conv.create, {})
    cid = (created or {}).get("id")
    if cid is None:
        if created is not None:
            out.append(Live("conversation create", False, "no id at create.extract.id"))
        return out
    values["conversation_id"] = cid
    if conv.get is not None:
        read = step("conversation get", conv.get, {})
        values.update({k: v for k, v in (read or {}).items() if v is not None})
    size = platform.send.min_payload_bytes or 1024
    payload = (b"chaosmessaging check-platform " * (size // 30 + 1))[:size]
    digest = hashlib.sha256(payload).hexdigest()[:16]
    ciphertext = (
        base64.b64encode(payload).decode()
        if platform.send.payload_encoding == "base64"
        else payload.decode()
    )
    step(
        "send",
        platform.send,
        {
            "client_msg_id": f"check-platform:{uuid.uuid4().hex[:8]}:{digest}",
            "txn_id": uuid.uuid4().hex,
            "ciphertext": ciphertext,
        },
    )
    if conv.list is not None:
        try:
            r = _call(platform, conv.list, values, token, configuration, secrets)
            ids = [
                str(find_one(conv.list.page.id, item))
                for item in find_all(conv.list.page.items, r.json())
            ]
            good = r.status_code in conv.list.ok and str(cid) in ids
            out.append(
                Live(
                    "conversation list",
                    good,
                    f"GET {conv.list.path} -> HTTP {r.status_code}, "
                    + ("lists it" if good else "does not list it on the first page"),
                )
            )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            out.append(Live("conversation list", False, str(exc)))
    if conv.delete is not None:
        step("conversation delete", conv.delete, {})
    return out


def format_table(rows: list[Row]) -> str:
    """A plain-text table: experiment, criterion, status, detail."""
    head = ("experiment", "criterion", "status", "detail")
    body = [(r.experiment, r.criterion, r.status.state, r.status.why) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(3)]
    lines = []
    for cells in [head, *body]:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(cells[:3], widths, strict=True)) + "  " + cells[3]
        )
    return "\n".join(line.rstrip() for line in lines)

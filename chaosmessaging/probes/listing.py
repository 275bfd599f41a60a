"""Conversation lists walked to the end (plan test 2): every page, exactly the user's conversations.

A list that skips one conversation at a page boundary, or repeats one, looks healthy on its first
page. `conversation_lists_complete` logs in as each load-test user, follows `next_cursor` through
every page of `GET /v1/conversations` with a small page size (so the walk crosses many
boundaries), and compares what the API listed with the conversations the user participates in,
read from PostgreSQL (`participants`, `messaging_pg_dsn`, a read-only query). Run it after the
load ended: a list that changes during the walk is not one the walk can judge.
"""

from __future__ import annotations

from collections import Counter

import httpx
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosmessaging import targets
from chaosmessaging.clients.postgres import pg_fetch
from chaosmessaging.clients.platform import PlatformCallFailed, login
from chaosmessaging.config import lookup
from chaosmessaging.verdicts import Verdict, judges_method, logged, verdict

__all__ = ["conversation_lists_complete"]

MAX_PAGES = 10000
MEMBERSHIP_SQL = "SELECT conversation_id::text FROM participants WHERE user_id = $1::uuid"


def walk(api_url: str, token: str, page_size: int, timeout: float = 10.0) -> tuple[list[str], int]:
    """Every id the API lists for the token's user, page after page, in order (repeats kept),
    and the number of pages read."""
    listed: list[str] = []
    cursor = None
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=timeout) as client:
        for page in range(1, MAX_PAGES + 1):
            params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            r = client.get(
                f"{api_url.rstrip('/')}/v1/conversations", params=params, headers=headers
            )
            if r.status_code != 200:
                raise ActivityFailed(
                    f"listing conversations (page {page}) answered HTTP {r.status_code}: "
                    f"{r.text[:200]}"
                )
            doc = r.json()
            items = doc.get("conversations", doc.get("items", []))
            if len(items) > page_size:
                raise ActivityFailed(
                    f"page {page} holds {len(items)} items, over limit={page_size}"
                )
            listed.extend(str(c["id"]) for c in items)
            cursor = doc.get("next_cursor")
            if not cursor:
                return listed, page
    raise ActivityFailed(f"the list did not end after {MAX_PAGES} pages: a cursor that loops?")


@judges_method()
def conversation_lists_complete(
    users: int,
    page_size: int = 5,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    For each of the first `users` load-test users: walk every page of their conversation list
    (`page_size` per page) and require exactly the conversations they participate in (from
    PostgreSQL): none missing, none twice, none they are not in. Holds before the method.
    Figures: users, pages, listed, expected, missing, repeated, foreign, examples.
    """
    users, page_size = int(users), int(page_size)
    if users < 1 or not 1 <= page_size <= 100:
        raise ActivityFailed("users must be >= 1 and page_size in 1..100")
    prefix = str(lookup("messaging_loadtest_prefix", configuration, secrets))
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    auth = targets.check(
        str(lookup("messaging_auth_url", configuration, secrets)),
        "messaging_auth_url",
        configuration,
        secrets,
    )
    api = targets.check(
        str(lookup("messaging_api_url", configuration, secrets)),
        "messaging_api_url",
        configuration,
        secrets,
    )
    pages = listed_total = expected_total = 0
    missing: list[str] = []
    repeated: list[str] = []
    foreign: list[str] = []
    for n in range(users):
        name = f"{prefix}-{n}"
        try:
            session = login(auth, name, password)
        except (PlatformCallFailed, httpx.HTTPError) as exc:
            raise ActivityFailed(f"cannot log in as {name} to walk its list: {exc}") from None
        rows = pg_fetch(MEMBERSHIP_SQL, (session["user_id"],), dsn, configuration, secrets)
        truth = {r[0] for r in rows}
        listed, read = walk(api, session["token"], page_size)
        pages += read
        listed_total += len(listed)
        expected_total += len(truth)
        counts = Counter(listed)
        missing += [f"{name}: {c}" for c in sorted(truth - counts.keys())]
        repeated += [f"{name}: {c} x{k}" for c, k in sorted(counts.items()) if k > 1]
        foreign += [f"{name}: {c}" for c in sorted(counts.keys() - truth)]
    figures = dict(
        users=users,
        page_size=page_size,
        pages=pages,
        listed=listed_total,
        expected=expected_total,
        missing=len(missing),
        repeated=len(repeated),
        foreign=len(foreign),
        examples={"missing": missing[:5], "repeated": repeated[:5], "foreign": foreign[:5]},
    )
    ok = not (missing or repeated or foreign)
    if ok:
        reason = (
            f"{users} users' lists walked to the end ({pages} pages of {page_size}): exactly their "
            f"{expected_total} conversations, none missing, none twice"
        )
    else:
        reason = (
            f"walking {users} users' lists ({pages} pages of {page_size}): {len(missing)} "
            f"conversation(s) missing, {len(repeated)} listed twice, {len(foreign)} listed to a "
            f"non-participant (of {expected_total} expected)"
        )
    return logged(verdict(ok, reason, **figures), "conversation lists")

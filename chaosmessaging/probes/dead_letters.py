"""Did the dead-letter stream grow during the run?

`probes.redis.dead_letter_count` reads the stream's length now; a soak's criterion is that the run
added nothing to it, which on a long-lived platform (whose stream may hold old poison entries) is
a difference, not an absolute count. `snapshot_dead_letters` records the length at the start of
the method, `dead_letters_not_grown` judges the growth in the hypothesis: trivially true before
the method, false after it when no snapshot was taken.
"""

from __future__ import annotations

from chaoslib.types import Configuration, Secrets

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging import runs
from chaosmessaging.probes.redis import dead_letter_count
from chaosmessaging.verdicts import Verdict, judges_method, logged, verdict

__all__ = ["snapshot_dead_letters", "dead_letters_not_grown"]

_DEAD_LETTERS = runs.Snapshots(
    "dead_letters",
    "no dead-letter snapshot {label!r} in this run: add snapshot_dead_letters(label={label!r}) "
    "to the method",
)


def snapshot_dead_letters(
    label: str = "method",
    dead_stream: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """
    Record the dead-letter stream's length (`messaging_dead_stream` unless `dead_stream`) in
    the run's facts under `label` and return it.
    """
    count = dead_letter_count(dead_stream, redis_url, configuration, secrets)
    return _DEAD_LETTERS.record(label, count, configuration)


@platform_applies
@judges_method(before=None, now=None, grew=None)
def dead_letters_not_grown(
    since: str = "method",
    max_growth: int = 0,
    dead_stream: str = None,
    redis_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Whether the dead-letter stream grew by at most `max_growth` entries since
    `snapshot_dead_letters(label=since)`. Verdict with `before`, `now`, `grew`; holds
    before the method ran, fails after it when the snapshot is missing.
    """
    before = _DEAD_LETTERS.get(since, configuration)
    if before is None:
        return verdict(False, _DEAD_LETTERS.missing_reason(since), before=None, now=None, grew=None)
    now = dead_letter_count(dead_stream, redis_url, configuration, secrets)
    grew = now - int(before)
    reason = (
        f"dead-letter stream grew by {grew} since {since!r} ({before} -> {now}; "
        f"at most {int(max_growth)})"
    )
    return logged(verdict(grew <= int(max_growth), reason, before=int(before), now=now, grew=grew))

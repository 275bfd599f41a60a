"""Deliberately broken variants of the reference stack, for `chaosmessaging selfcheck` only.

`MSGSTACK_MUTANT=<name>[,<name>...]` switches on a known bug at one of the marked points of the
services, the storage layer and the migration runner (search for `mutants.on(` and
`mutants.once(`: a one-shot bug strikes once per process, then the service behaves again). With
the variable unset (always, in real use) every check is False and the services behave as
documented. The catalogue of names, what each breaks and which experiment must catch it lives in
`chaosmessaging.mutants`; this module only reads the switch, so the stack never learns about
the extension.
"""

from __future__ import annotations

import logging
import os

__all__ = ["active", "on", "once"]

ENV = "MSGSTACK_MUTANT"


def active() -> frozenset[str]:
    """The mutants switched on for this process (empty in real use)."""
    return frozenset(n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip())


_ACTIVE = active()
if _ACTIVE:
    logging.getLogger("msgstack").warning(
        "MUTANT BUILD: %s switched on (a deliberately broken stack for selfcheck)",
        ", ".join(sorted(_ACTIVE)),
    )


def on(name: str) -> bool:
    """True when mutant `name` is switched on in this process."""
    return name in _ACTIVE


_STRUCK: set[str] = set()


def once(name: str) -> bool:
    """True the first time it is asked while one-shot mutant `name` is on, then False: the bug
    strikes once per process (a frame lost, a socket closed), as a real intermittent one does."""
    if name not in _ACTIVE or name in _STRUCK:
        return False
    _STRUCK.add(name)
    return True

"""Deliberately broken variants of the reference stack, for `chaosmessaging selfcheck` only.

`MSGSTACK_MUTANT=<name>[,<name>...]` switches on a known bug at one of the marked points of the
services, the storage layer and the migration runner (search for `mutants.on(`). With the variable
unset (always, in real use) every check is False and the services behave as documented. The
catalogue of names, what each breaks and which experiment must catch it lives in
`chaosmessaging.selfcheck`; this module only reads the switch, so the stack never learns about
the extension.
"""

from __future__ import annotations

import logging
import os

__all__ = ["active", "on"]

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

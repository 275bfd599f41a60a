"""The control every experiment of this project declares: the five below, in this order.

- `chaosmessaging.controls.validation`: the experiment's values and targets are checked before
  anything happens (a bad value is a configuration error, never a deviation);
- `chaosmessaging.controls.stack`: bring the embedded stack up when the experiment targets it;
- `chaosmessaging.controls.rig`: one real load-test login before the steady state; a rig failure
  (a load that did not start or died, a refused login) stops the method before the next fault and
  ends the run as a rig failure, never a deviation;
- `chaosmessaging.controls.safety`: revert every recorded fault on any outcome, stop the method
  at once on SIGINT/SIGTERM;
- `chaosmessaging.controls.verdict`: a steady state broken before the method fails the run;
- `chaosmessaging.controls.report`: the run's fault windows and load phases written into the
  journal for `chaos report` (after safety's reverts, so every window is closed).

One entry in an experiment instead of five keeps the safety net impossible to forget::

    "controls": [{"name": "chaosmessaging",
                  "provider": {"type": "python", "module": "chaosmessaging.controls.standard"}}]

Each hook calls the same hook of each bundled control (when it has one) with the arguments that
hook declares, exactly as chaoslib would call it.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmessaging.controls import report, rig, safety, stack, validation, verdict

__all__ = [
    "configure_control",
    "before_experiment_control",
    "after_experiment_control",
    "before_activity_control",
    "after_activity_control",
    "before_rollback_control",
    "cleanup_control",
]

BUNDLED: tuple[ModuleType, ...] = (validation, stack, rig, safety, verdict, report)


def _call(hook: str, **arguments: Any) -> None:
    for module in BUNDLED:
        func = getattr(module, hook, None)
        if func is None:
            continue
        parameters = inspect.signature(func).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        func(**{k: v for k, v in arguments.items() if takes_all or k in parameters})


def configure_control(
    configuration: Configuration = None,
    secrets: Secrets = None,
    experiment: dict = None,
    settings: dict = None,
    revert_leftovers: bool = True,
) -> None:
    """`revert_leftovers`: see `chaosmessaging.controls.safety.configure_control`."""
    _call(
        "configure_control",
        configuration=configuration,
        secrets=secrets,
        experiment=experiment,
        settings=settings,
        revert_leftovers=revert_leftovers,
    )


def before_experiment_control(
    context: dict, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    _call(
        "before_experiment_control",
        context=context,
        configuration=configuration,
        secrets=secrets,
        **kwargs,
    )


def after_experiment_control(
    context: dict,
    state: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    _call(
        "after_experiment_control",
        context=context,
        state=state,
        configuration=configuration,
        secrets=secrets,
        **kwargs,
    )


def before_activity_control(
    context: dict, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    _call(
        "before_activity_control",
        context=context,
        configuration=configuration,
        secrets=secrets,
        **kwargs,
    )


def after_activity_control(
    context: dict,
    state: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    _call(
        "after_activity_control",
        context=context,
        state=state,
        configuration=configuration,
        secrets=secrets,
        **kwargs,
    )


def before_rollback_control(
    context: dict, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    _call(
        "before_rollback_control",
        context=context,
        configuration=configuration,
        secrets=secrets,
        **kwargs,
    )


def cleanup_control() -> None:
    _call("cleanup_control")

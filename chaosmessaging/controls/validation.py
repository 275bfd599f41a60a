"""Control: an experiment's values and targets are checked when the run starts, before the steady
state is probed, before any load or fault.

Chaos Toolkit substitutes `${key}` in activity arguments only when an activity runs, so a profile
value of the wrong type (`t9_rate: "fast"`) or out of range (`duration: 0`, a negative latency)
would otherwise surface in the middle of the method, after a partition was injected, and end the
run "deviated" as if the platform had failed. This control reads every Python activity of the
experiment (hypothesis, method, rollbacks), resolves each argument (literal or `${key}`) against
the run's configuration, and checks it against the activity function's own annotation (`int`,
`float`, `bool`, `str`, `list`, `dict`) and a range: numbers are never negative, and durations,
rates, timeouts and intervals must be positive. Pauses must be non-negative numbers. A `${key}`
that the configuration does not define is an error too. Every configured target (the addresses
in `chaosmessaging.config.KEYS`) is checked against the loopback allow-list
(`chaosmessaging.targets`) as well.

On an error the run stops before anything happens: the log names each bad parameter in one
sentence, the control exits the run the way chaoslib's own "exit without rollbacks" does
(`SystemExit(30)`: nothing ran, so there is nothing to roll back), `chaos run` exits 1, and the
journal gets
`"chaosmessaging_configuration_error": {"errors": [...]}` with `status` "failed" and `deviated`
false: a configuration error is never reported like a resilience failure.

Why hand-written: the rules come from the activities' signatures (no schema to keep in sync);
a schema library would need the same walk over the experiment to feed it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import typing
from typing import Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets
from logzero import logger

from chaosmessaging.platform import PlatformError, load_platform
from chaosmessaging import targets
from chaosmessaging.config import KEYS, lookup

__all__ = ["before_experiment_control", "after_experiment_control", "configuration_errors"]

#: numeric arguments that must be strictly positive (a zero would mean "nothing", or "forever")
POSITIVE = re.compile(
    r"^(rate|duration(_s)?|timeout|settle_timeout|interval(_s)?|poll_interval|"
    r"total_messages|limit_seconds|max_duration|max_rate|max_samples|"
    r"max_count|max_scan|max_entries_scan)$"
)
_REF = re.compile(r"\$\{([^}]+)\}")
_TARGET_KEYS = [k for k in KEYS if k.endswith(("_url", "_dsn"))]

#: chaoslib's code for "stop now, play no rollback" (chaoslib.exit)
EXIT_WITHOUT_ROLLBACKS = 30

_errors: list[str] = []


def _activities(experiment: Experiment) -> list[dict]:
    found = list((experiment.get("steady-state-hypothesis") or {}).get("probes") or [])
    found += list(experiment.get("method") or []) + list(experiment.get("rollbacks") or [])
    return [a for a in found if isinstance(a, dict) and a.get("type") in ("action", "probe")]


def _resolve(value: Any, configuration: dict, where: str, errors: list[str]) -> Any:
    """The value an argument will have at run time; records undefined `${key}` references."""
    if not isinstance(value, str):
        return value
    refs = _REF.findall(value)
    for ref in refs:
        if ref not in configuration:
            errors.append(
                f"{where} uses ${{{ref}}}, which the configuration does not define "
                "(add it to the experiment's configuration or the profile)"
            )
    whole = _REF.fullmatch(value)
    if whole and whole.group(1) in configuration:
        return configuration[whole.group(1)]
    return value


def _named(value: Any, raw: Any) -> str:
    ref = _REF.fullmatch(raw) if isinstance(raw, str) else None
    return f"{ref.group(1)}={value!r}" if ref else f"{value!r}"


def _number(value: Any, integer: bool) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d+)?", value.strip()):
        number = float(value)
    else:
        return None
    if math.isnan(number) or math.isinf(number) or (integer and not number.is_integer()):
        return None
    return number


def _check_argument(
    name: str, annotation: Any, value: Any, raw: Any, where: str, errors: list[str]
) -> None:
    if value is None:
        return
    kinds = {a for a in typing.get_args(annotation)} or {annotation}
    kinds.discard(type(None))
    shown = _named(value, raw)
    if kinds & {int, float}:
        integer = kinds <= {int}
        number = _number(value, integer)
        if number is None:
            if str in kinds:  # e.g. a k6 duration "30s" where seconds are also accepted
                return
            kind = "a whole number" if integer else "a number"
            errors.append(f"{where}: {name} must be {kind}, got {shown}")
            return
        if POSITIVE.match(name) and number <= 0:
            errors.append(f"{where}: {name} must be greater than 0, got {shown}")
        elif number < 0:
            errors.append(f"{where}: {name} must not be negative, got {shown}")
    elif (
        kinds == {bool}
        and not isinstance(value, bool)
        and str(value).lower() not in ("true", "false")
    ):
        errors.append(f"{where}: {name} must be true or false, got {shown}")
    elif kinds == {list} and not isinstance(value, list | str):
        errors.append(f"{where}: {name} must be a list, got {shown}")
    elif kinds == {dict} and not isinstance(value, dict):
        errors.append(f"{where}: {name} must be an object, got {shown}")
    elif kinds == {str} and isinstance(value, dict | list):
        errors.append(f"{where}: {name} must be a string, got {shown}")
    elif kinds == {str} and (number := _number(value, False)) is not None:
        # a duration given in seconds where a k6 duration string is also accepted
        if POSITIVE.match(name) and number <= 0:
            errors.append(f"{where}: {name} must be greater than 0, got {shown}")
    if (
        name in ("duration", "max_duration")
        and isinstance(value, str)
        and _number(value, False) is None
        and not re.fullmatch(r"(\d+(\.\d+)?(ms|s|m|h))+", value.replace(" ", ""))
    ):
        errors.append(
            f"{where}: {name} must be seconds or a k6 duration such as '30s' or '5m', got {shown}"
        )


def configuration_errors(
    experiment: Experiment, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    """Every problem with the experiment's values and targets, one sentence each."""
    configuration = dict(configuration or {})
    errors: list[str] = []
    for activity in _activities(experiment):
        where = f"{activity.get('type')} '{activity.get('name')}'"
        for moment, pause in (activity.get("pauses") or {}).items():
            value = _resolve(pause, configuration, where, errors)
            number = _number(value, False)
            if number is None or number < 0:
                errors.append(
                    f"{where}: pause {moment} must be a non-negative number of "
                    f"seconds, got {_named(value, pause)}"
                )
        provider = activity.get("provider") or {}
        if provider.get("type") != "python":
            continue
        try:
            func = getattr(importlib.import_module(provider["module"]), provider["func"])
            hints = typing.get_type_hints(func)
            parameters = inspect.signature(func).parameters
        except (ImportError, AttributeError, KeyError, TypeError, NameError) as error:
            errors.append(
                f"{where}: cannot load {provider.get('module')}.{provider.get('func')} ({error})"
            )
            continue
        for name, raw in (provider.get("arguments") or {}).items():
            value = _resolve(raw, configuration, where, errors)
            if name not in parameters:
                if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                    known = [p for p in parameters if p not in ("configuration", "secrets")]
                    errors.append(
                        f"{where}: {provider['func']} takes no argument {name!r} "
                        f"(it takes {', '.join(known)})"
                    )
                continue
            _check_argument(name, hints.get(name, Any), value, raw, where, errors)
    allow = targets.allowed_hosts(configuration, secrets)
    for key in _TARGET_KEYS:
        try:
            target = lookup(key, configuration, secrets, required=False)
        except Exception:  # an unreadable stack state is the stack control's to report
            continue
        if (
            target
            and (host := targets.host_of(str(target))) is not None
            and not targets.is_allowed(host, allow)
        ):
            errors.append(
                f"{key} points at {host}, which is not loopback: list it in "
                f"allow_hosts (or {targets.ALLOW_ENV}) if you mean to test it"
            )
    # the platform file (docs/platforms.md): a mistake there is a configuration error too
    try:
        load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        errors.extend(f"platform file {exc.path}: {line}" for line in exc.errors)
    return errors


def before_experiment_control(
    context: Experiment, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    """Stop the run before anything happens when a value or a target is wrong."""
    global _errors
    _errors = configuration_errors(context, configuration, secrets)
    if _errors:
        for error in _errors:
            logger.error(f"configuration error: {error}")
        logger.error(
            f"configuration error ({len(_errors)} problem(s)): nothing was run; fix the "
            "experiment or profile and run again"
        )
        raise SystemExit(EXIT_WITHOUT_ROLLBACKS)


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Say in the journal that the run stopped on a configuration error, not a deviation."""
    if _errors and isinstance(state, dict):
        state["status"] = "failed"
        state["deviated"] = False
        state["chaosmessaging_configuration_error"] = {
            "errors": list(_errors),
            "reason": "the experiment's configuration is invalid; nothing was run",
        }

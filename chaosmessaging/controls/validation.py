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
from pathlib import Path
from typing import Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets
from logzero import logger

from chaosmessaging.platform import PlatformError, load_platform
from chaosmessaging import targets
from chaosmessaging.clients.prometheus import SOURCES
from chaosmessaging.config import EXPLICIT_SOURCES, KEYS, TARGET_KEYS, _find, lookup, redact

__all__ = [
    "before_experiment_control",
    "after_experiment_control",
    "configuration_errors",
    "target_errors",
    "resolved_targets",
    "invocation_errors",
    "setting_errors",
]

#: numeric arguments that must be strictly positive (a zero would mean "nothing", or "forever")
POSITIVE = re.compile(
    r"^(rate|duration(_s)?|timeout|settle_timeout|interval(_s)?|poll_interval|"
    r"total_messages|limit_seconds|max_duration|max_rate|max_samples|"
    r"max_count|max_scan|max_entries_scan)$"
)
_REF = re.compile(r"\$\{([^}]+)\}")
_TARGET_KEYS = TARGET_KEYS
_HTTP_KEYS = [k for k in TARGET_KEYS if k.endswith("_url") and k != "messaging_redis_url"]

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


def _limit_errors(
    provider: dict, configuration: dict, secrets: Secrets, where: str, table: str = "LIMITS"
) -> list[str]:
    """The activity's own check of its values against its real limits (enums, caps, maxima,
    scripts that must exist): its module's `LIMITS[func](arguments, configuration, secrets)`.
    Skipped while an argument still holds an unresolved `${key}` (reported above)."""
    module = importlib.import_module(provider["module"])
    check = (getattr(module, table, None) or {}).get(provider["func"])
    if check is None:
        return []
    arguments = {}
    for name, raw in (provider.get("arguments") or {}).items():
        value = _resolve(raw, configuration, where, [])
        if isinstance(value, str) and _REF.search(value):
            return []
        arguments[name] = value
    try:
        found = check(arguments, configuration, secrets)
    except Exception as exc:  # a check must never crash the run: report it as it is
        found = [f"could not check the values ({type(exc).__name__}: {exc})"]
    return [f"{where}: {sentence}" for sentence in found]


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
        errors += _limit_errors(provider, configuration, secrets, where)
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
    errors += _metrics_source_errors(configuration, secrets)
    # the platform file (docs/platforms.md): a mistake there is a configuration error too
    try:
        load_platform(configuration=configuration, secrets=secrets)
    except PlatformError as exc:
        errors.extend(f"platform file {exc.path}: {line}" for line in exc.errors)
    return errors


def resolved_targets(
    configuration: Configuration = None, secrets: Secrets = None
) -> list[tuple[str, str | None, str | None]]:
    """(key, address with passwords hidden, where it came from) for every target key. A key the
    embedded stack will give once the stack control starts it reads "embedded stack (to be
    started)"."""
    rows = []
    for key in _TARGET_KEYS:
        try:
            value, source = _find(key, configuration, secrets)
        except Exception as exc:  # an unreadable stack state is the stack control's to report
            value, source = None, f"unreadable ({type(exc).__name__})"
        if source is None and KEYS[key][1] is not None and not _external(configuration, secrets):
            source = "embedded stack (to be started)"
        rows.append((key, redact(str(value)) if value not in (None, "") else None, source))
    return rows


def _external(configuration: Configuration, secrets: Secrets) -> bool:
    """True when the run targets the user's platform (the stack control starts no stack)."""
    _, source = _find("messaging_api_url", configuration, secrets)
    return bool(source and source.startswith(EXPLICIT_SOURCES))


def _uses_proxy(experiment: Experiment) -> bool:
    for activity in _activities(experiment):
        module = str((activity.get("provider") or {}).get("module", ""))
        if module.endswith(".toxiproxy"):
            return True
    return False


def _shape_errors(key: str, value: str) -> list[str]:
    """What is wrong with the form of a target address (the user's words, the key named)."""
    from urllib.parse import urlsplit

    shown = redact(value)
    if key in _HTTP_KEYS:
        if "://" not in value:
            return [
                f"{key} {shown!r} has no scheme: write http://host:port (the probes would add "
                "http://, k6 would not, and the load would fail mid-run)"
            ]
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            return [f"{key} {shown!r} has scheme {parts.scheme!r}: use http:// or https://"]
        if parts.path not in ("", "/") or parts.query:
            return [
                f"{key} {shown!r} has a path ({parts.path or '?' + parts.query}): give the "
                "service's base URL, http://host:port; every probe adds its own path"
            ]
    elif key == "messaging_redis_url" and "://" in value:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            return [f"{key} {shown!r} has scheme {parts.scheme!r}: use redis:// or rediss://"]
    elif key == "messaging_pg_dsn" and "://" in value:
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            return [f"{key} {shown!r} has scheme {parts.scheme!r}: use postgresql://"]
    if "://" in value:
        try:
            port = urlsplit(value).port
        except ValueError:
            return [f"{key} {shown!r} has a port that is not a number from 1 to 65535"]
        if port == 0:
            return [f"{key} {shown!r} has port 0, which no server listens on: give 1-65535"]
    return []


def target_errors(
    experiment: Experiment, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    """A run's targets come from one source: all set explicitly (argument, secrets,
    configuration, environment) or all from one embedded stack. A half-configured platform
    (some addresses set, others falling back to the stack or a default, e.g. the Toxiproxy URL
    to http://127.0.0.1:8474, another stack's proxy) is an error naming the missing keys. Also
    checks each address's form (`_shape_errors`) and the allow-list's entries."""
    errors = list(targets.allow_list_errors(configuration, secrets))
    rows = resolved_targets(configuration, secrets)
    explicit = [k for k, v, src in rows if v and src and src.startswith(EXPLICIT_SOURCES)]
    fallback = [
        (k, src)
        for k, v, src in rows
        if src
        and (v or src.startswith("embedded stack"))
        and not src.startswith(EXPLICIT_SOURCES)
        and (k != "toxiproxy_url" or _uses_proxy(experiment))
    ]
    if explicit and fallback:
        missing = ", ".join(
            f"{k} ({KEYS[k][0]}; would fall back to the "
            f"{f'default {KEYS[k][2]}' if src == 'default' else src})"
            for k, src in fallback
        )
        errors.append(
            f"the platform under test is half-configured: {', '.join(explicit)} set explicitly "
            f"but not {missing}. A run's targets come from one source: set these too, or unset "
            "the others to run against the embedded stack alone"
        )
    for key in _TARGET_KEYS:
        try:
            value, source = _find(key, configuration, secrets)
        except Exception:
            continue
        if value not in (None, "") and source and source.startswith(EXPLICIT_SOURCES):
            errors += _shape_errors(key, str(value))
    return errors


def preflight_errors(
    experiment: Experiment, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    """Each activity's checks against the platform this run targets (its module's `PREFLIGHT`,
    e.g. enough seeded load-test users for a device fleet), when the run starts."""
    configuration = dict(configuration or {})
    errors = []
    for activity in _activities(experiment):
        provider = activity.get("provider") or {}
        if provider.get("type") != "python":
            continue
        where = f"{activity.get('type')} '{activity.get('name')}'"
        try:
            errors += _limit_errors(provider, configuration, secrets, where, "PREFLIGHT")
        except (ImportError, KeyError):
            continue  # configuration_errors names a module that cannot be loaded
    return errors


def invocation_errors(experiment: Experiment, argv: list[str] | None = None) -> list[str]:
    """What the `chaos run` command line asked for that would silently not happen: a
    `--var-file` that is not valid JSON/YAML or not an object (Chaos Toolkit logs one error and
    runs with the experiment's own values: smoke values for the nightly experiments), and a
    `--var` key the experiment's configuration does not define (a misspelt key is ignored)."""
    import difflib
    import json

    from chaosmessaging import rig

    arguments = rig.chaos_run_arguments(argv)
    if arguments is None:
        return []
    errors = []
    for path in arguments.get("var_file") or ():
        suffix = Path(str(path)).suffix.lower()
        if suffix not in (".json", ".yaml", ".yml"):
            continue
        try:
            text = Path(str(path)).read_text()
            if not text.strip():
                continue
            if suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, Exception) as exc:
            errors.append(
                f"--var-file {path} cannot be read as {suffix[1:].upper()} ({exc}); Chaos Toolkit "
                "would only log this and run with the experiment's own values, so nothing was run"
            )
            continue
        if not isinstance(data, dict):
            errors.append(
                f"--var-file {path} holds a {type(data).__name__}, not an object with "
                '"configuration" and/or "secrets": nothing was run'
            )
    known = sorted((experiment.get("configuration") or {}).keys())
    for key in arguments.get("var") or {}:
        if key in known or key in KEYS:
            continue
        close = difflib.get_close_matches(key, known + list(KEYS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        errors.append(
            f"--var {key}: the experiment's configuration has no key {key!r}, so the value would "
            f"be ignored{hint}"
        )
    return errors


def setting_errors(configuration: Configuration = None, secrets: Secrets = None) -> list[str]:
    """Settings that are not addresses, reported against what the user set (the variable or
    key), before anything starts."""
    errors = []
    try:
        value, source = _find("messaging_loadtest_users", configuration, secrets)
    except Exception:
        return errors
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        where = source if source and source != "default" else "the default"
        errors.append(
            f"messaging_loadtest_users={value!r} (from {where}) must be a whole number of "
            "load-test users above 0, e.g. CHAOSMESSAGING_LOADTEST_USERS=50"
        )
    return errors


def _log_targets(configuration: Configuration, secrets: Secrets) -> None:
    logger.info("targets of this run (key, address, source):")
    for key, value, source in resolved_targets(configuration, secrets):
        logger.info(f"  {key:<26} {value or '-':<44} {source or 'not set'}")


def _metrics_source_errors(configuration: Configuration, secrets: Secrets) -> list[str]:
    source = str(lookup("metrics_source", configuration, secrets)).strip().lower()
    if source not in SOURCES:
        return [f"metrics_source {source!r} must be one of {list(SOURCES)}"]
    try:
        url = lookup("prometheus_url", configuration, secrets, required=False)
    except Exception:  # an unreadable stack state is the stack control's to report
        url = None
    if source == "prometheus" and not url:
        return [
            "metrics_source is 'prometheus' but no prometheus_url is set (configuration key or "
            "CHAOSMESSAGING_PROMETHEUS_URL, e.g. http://prometheus:9090)"
        ]
    return []


def before_experiment_control(
    context: Experiment, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    """Stop the run before anything happens when a value or a target is wrong."""
    global _errors
    _errors = configuration_errors(context, configuration, secrets)
    _errors += target_errors(context, configuration, secrets)
    _errors += setting_errors(configuration, secrets)
    if not any("messaging_loadtest_users" in e for e in _errors):
        _errors += preflight_errors(context, configuration, secrets)
    _errors += invocation_errors(context)
    _log_targets(configuration, secrets)
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

"""Control: a failure of the rig is never reported as a weakness of the system.

Before the steady state (after the stack control started the stack): one real login with the
load-test credentials when the experiment starts load or WebSocket clients, so a wrong password
is found before any fault, not as a 401 buried in k6's log.

During the method: before each activity, every load this run started must still be running or
have ended normally (k6 exit 0, or 99 for failed thresholds, which is the system's verdict); an
activity may also report a rig failure itself (`chaosmessaging.rig.report` / `RigFailure`). Either
way the method stops there (`InterruptExecution`, like an interrupted run): no further fault is
injected, the safety net reverts every recorded fault, and the journal says
``"chaosmessaging_rig_failure": {"failures": [...]}`` with status "failed", `deviated` false;
`chaos run` exits `chaosmessaging.rig.EXIT_RIG_FAILURE` (3).

How the exit code is set: Chaos Toolkit exits 1 for any run that did not complete. An `atexit`
hook registered when this module is imported (before the safety net's, so it runs after it) ends a
`chaos run` process whose run ended on a rig failure with exit code 3 instead, after flushing the
logs. Only in a `chaos run` process; never in tests or in-process callers.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Activity, Configuration, Experiment, Journal, Secrets
from logzero import logger

from chaosmessaging import rig

__all__ = [
    "before_experiment_control",
    "before_activity_control",
    "after_activity_control",
    "before_rollback_control",
    "after_experiment_control",
]

#: chaoslib's code for "stop now, play no rollback" (nothing ran yet)
EXIT_WITHOUT_ROLLBACKS = 30
#: activities that log load-test users in
_LOGS_IN = {"start_load", "start_clients", "websocket_delivery", "message_accounting"}

_ended_on_rig_failure = False
_rolling_back = False


def _uses_login(experiment: Experiment) -> bool:
    found = list((experiment.get("steady-state-hypothesis") or {}).get("probes") or [])
    found += list(experiment.get("method") or [])
    return any(
        isinstance(a, dict) and (a.get("provider") or {}).get("func") in _LOGS_IN for a in found
    )


def login_failure(configuration: Configuration = None, secrets: Secrets = None) -> str | None:
    """One real login as the first load-test user; a sentence when the credentials are refused
    (401/403). An unreachable or failing auth service is the system's matter (the steady state
    judges it), not reported here."""
    import requests

    from chaosmessaging import targets
    from chaosmessaging.config import lookup

    auth = targets.address("messaging_auth_url", configuration, secrets, required=False)
    if not auth:
        return None
    prefix = str(lookup("messaging_loadtest_prefix", configuration, secrets))
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    user = f"{prefix}-0"
    try:
        response = requests.post(
            f"{str(auth).rstrip('/')}/v1/auth/login",
            json={"username": user, "password": password},
            timeout=10,
        )
    except requests.RequestException as exc:
        logger.warning(f"preflight login could not reach {auth}: {type(exc).__name__}")
        return None
    if response.status_code in (401, 403):
        return (
            f"the load-test login as {user} was refused by {auth} (HTTP {response.status_code}): "
            "the load-test credentials are wrong for this platform; set "
            "CHAOSMESSAGING_LOADTEST_PASSWORD (or the messaging_loadtest_password secret) and "
            "CHAOSMESSAGING_LOADTEST_PREFIX to users that exist there"
        )
    return None


def dead_loads(configuration: Configuration = None) -> list[str]:
    """A sentence for each load this run started (and did not yet wait for or stop) whose k6
    process ended abnormally: it did not start (bad script, bad option) or died mid-run."""
    from chaosmessaging import runs
    from chaosmessaging.actions import load
    from chaosmessaging.util import home_of, tail

    if not os.environ.get(runs.ENV):
        return []
    found = []
    for key, fact in runs.facts(home=home_of(configuration)).items():
        if not key.startswith("load:") or not isinstance(fact, dict) or "ended_at" in fact:
            continue
        child = load._CHILDREN.get(fact.get("pid"))
        code = child.poll() if child is not None else None
        if not load.is_rig_failure(code, tail(fact.get("log_path"), 40)):
            continue  # still running, a verdict (0, 99), or the system failed it: not the rig
        ran = time.time() - float(fact.get("started_at") or time.time())
        found.append(
            f"the k6 load {fact.get('label')!r} ({fact.get('script')}) ended with exit code "
            f"{code} after {ran:.0f} s of {float(fact.get('duration_s') or 0):g} s; see "
            f"{fact.get('log_path')}:\n  {tail(fact.get('log_path'), 8)}"
        )
    return found


def before_experiment_control(
    context: Experiment, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    """The preflight that needs the platform: one real login with the load-test credentials."""
    global _ended_on_rig_failure, _rolling_back
    rig.reset()
    _ended_on_rig_failure, _rolling_back = False, False
    if _uses_login(context) and (why := login_failure(configuration, secrets)):
        rig.report(why)
        logger.error("rig failure before the steady state: nothing was run")
        raise SystemExit(EXIT_WITHOUT_ROLLBACKS)


def before_rollback_control(context: Experiment, **kwargs: Any) -> None:
    """Rollbacks are the way back: never refused."""
    global _rolling_back
    _rolling_back = True


def _stop_if_rig_failed(where: str, configuration: Configuration) -> None:
    if _rolling_back:
        return
    for sentence in dead_loads(configuration):
        rig.report(sentence)
    if rig.failures():
        raise InterruptExecution(
            f"rig failure {where}: {rig.failures()[0]}; stopping the method (no further fault)"
        )


def before_activity_control(
    context: Activity, configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any
) -> None:
    """Refuse the next activity once the rig failed (a load died, a login was refused)."""
    what = f"{context.get('type', 'activity')} {context.get('name')!r}"
    _stop_if_rig_failed(f"before {what}", configuration)


def after_activity_control(
    context: Activity,
    state: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Stop the method right after the activity in which the rig failed."""
    what = f"{context.get('type', 'activity')} {context.get('name')!r}"
    _stop_if_rig_failed(f"during {what}", configuration)


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Say in the journal that the run ended on a rig failure, never as a deviation."""
    global _ended_on_rig_failure
    if not rig.failures() or not isinstance(state, dict):
        return
    state["status"] = "failed"
    state["deviated"] = False
    state["chaosmessaging_rig_failure"] = {
        "failures": rig.failures(),
        "reason": "the rig (load, login or tooling) failed, not the system under test: the "
        "method was stopped before the next fault and every recorded fault reverted; fix the "
        "rig and run again",
    }
    _ended_on_rig_failure = True


def _exit_code_of_a_rig_failure() -> None:
    """atexit: a `chaos run` that ended on a rig failure exits EXIT_RIG_FAILURE, not 1."""
    if not _ended_on_rig_failure or rig.chaos_run_arguments() is None:
        return
    if (rig.chaos_run_arguments() or {}).get("no_exit"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(rig.EXIT_RIG_FAILURE)


atexit.register(_exit_code_of_a_rig_failure)

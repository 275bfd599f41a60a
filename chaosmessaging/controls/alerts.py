"""Control (optional): alert when a plain `chaos run` deviates or fails.

Declare it next to the standard control, with the URLs as a Chaos Toolkit secret (so they come
from the environment or a vault, never from the experiment file)::

    "secrets": {"alerts": {"alert_urls": {"type": "env", "key": "CHAOSMESSAGING_ALERT_URLS"}}},
    "controls": [
        {"name": "chaosmessaging", "provider": {"type": "python",
                                                "module": "chaosmessaging.controls.standard"}},
        {"name": "alerts", "provider": {"type": "python",
                                        "module": "chaosmessaging.controls.alerts",
                                        "secrets": ["alerts"]}}
    ]

`alert_urls` holds apprise URLs (comma or whitespace separated: ``slack://...``,
``msteams://...``, ``mailtos://...``, ``pagerduty://...``, ``json://host/path``...; see
`chaosmessaging.clients.alerts`). Without that secret the control reads the nightly suite's
variables (`CHAOSMESSAGING_ALERT_URLS`, `CHAOSMESSAGING_SLACK_WEBHOOK`,
`CHAOSMESSAGING_DISCORD_WEBHOOK`); with none at all it does nothing. It alerts on a deviation
(the system breached a criterion: each broken probe with its reason) and on a run that failed
without deviating (a configuration error or a rig failure: which activity failed and its error);
a run that held sends nothing unless the control's argument ``on`` lists ``"completed"``.
Delivery failures are logged by channel kind and index, never with the URL.
"""

from __future__ import annotations

from typing import Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets
from logzero import logger

__all__ = ["after_experiment_control", "outcome_of", "message"]

OUTCOMES = ("deviated", "failed", "completed")


def outcome_of(journal: Journal) -> str:
    """deviated (the system breached a criterion), failed (configuration error or rig failure:
    nothing judged the system) or completed (the steady state held)."""
    if journal.get("deviated"):
        return "deviated"
    return "completed" if journal.get("status") == "completed" else "failed"


def _last_line(exception: Any) -> str:
    if isinstance(exception, list) and exception:
        return str(exception[-1]).strip()
    return str(exception or "").strip()


def message(journal: Journal) -> str:
    """The alert's text: title line, then what broke and why (never a secret: journal facts)."""
    experiment = journal.get("experiment") or {}
    title = experiment.get("title", "experiment")
    outcome = outcome_of(journal)
    lines = []
    if outcome == "deviated":
        lines.append(f":rotating_light: chaos run deviated: {title}")
        after = (journal.get("steady_states") or {}).get("after") or {}
        for probe in after.get("probes") or []:
            if probe.get("tolerance_met"):
                continue
            output = probe.get("output")
            reason = output.get("reason") if isinstance(output, dict) else None
            name = (probe.get("activity") or {}).get("name", "?")
            lines.append(f"• {name}: {reason or _last_line(probe.get('exception')) or output}")
    elif outcome == "failed":
        config_error = journal.get("chaosmessaging_configuration_error")
        early = journal.get("chaosmessaging_verdict") or {}
        if config_error:
            lines.append(f":warning: chaos run stopped by a configuration error: {title}")
            errors = config_error.get("errors") if isinstance(config_error, dict) else None
            lines += [f"• {e}" for e in (errors or [config_error])]
        elif early.get("failed_before_method"):
            lines.append(f":rotating_light: steady state broken before the method: {title}")
            lines.append(f"• {', '.join(early.get('probes', []))}: {early.get('reason', '')}")
        else:
            lines.append(f":warning: chaos run failed (rig or activity failure): {title}")
            for item in (journal.get("run") or []) + (journal.get("rollbacks") or []):
                if item.get("status") == "failed":
                    name = (item.get("activity") or {}).get("name", "?")
                    lines.append(f"• {name}: {_last_line(item.get('exception'))}")
    else:
        lines.append(f":white_check_mark: chaos run held: {title}")
    duration = journal.get("duration")
    if isinstance(duration, int | float):
        lines.append(f"status {journal.get('status')}, {duration:.0f} s")
    return "\n".join(lines)


def _urls(secrets: Secrets) -> str | list | None:
    """`alert_urls` from the control's secrets (flat, or under any scope)."""
    if not secrets:
        return None
    if secrets.get("alert_urls"):
        return secrets["alert_urls"]
    for scope in secrets.values():
        if isinstance(scope, dict) and scope.get("alert_urls"):
            return scope["alert_urls"]
    return None


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    on: list[str] | None = None,
    **kwargs: Any,
) -> None:
    """Send the alert when the run's outcome is one of `on` (default: deviated, failed)."""
    from chaosmessaging.clients import alerts

    if state is None:
        return
    wanted = list(on) if on else ["deviated", "failed"]
    unknown = [o for o in wanted if o not in OUTCOMES]
    if unknown:
        logger.error(f"alerts control: unknown outcome(s) {unknown}; use {list(OUTCOMES)}")
        return
    if outcome_of(state) not in wanted:
        return
    urls = _urls(secrets)
    targets = alerts.urls_to_channels(urls) if urls else alerts.channels()
    if not targets:
        logger.warning(
            "alerts control: no alert URL configured (secret alert_urls or "
            "CHAOSMESSAGING_ALERT_URLS): nothing sent"
        )
        return
    result = alerts.send(message(state), targets)
    logger.info(
        f"alerts control: {result['sent']} of {len(targets)} alert channel(s) reached"
        + (f"; failed: {'; '.join(result['failed'])}" if result["failed"] else "")
    )

"""Test-only activities that restart the embedded stack's gateway with a sabotage switched on
(a gateway mutant, ``MSGSTACK_MUTANT``, chaosmessaging/mutants.py), so tests prove the WebSocket
verdicts fail when the gateway really leaks, corrupts, drops, closes or does not resume.

Loaded by `chaos run` from tests via PYTHONPATH; never part of the extension.
"""

from chaosmessaging.stack.control import start_service, stop_service
from chaosmessaging.stack.state import load_state, save_state
from chaosmessaging.util import home_of

ENV = "MSGSTACK_MUTANT"
# a sabotage's short name -> the gateway mutant that is that bug (the first four strike once)
SABOTAGES = {
    "leak": "gateway_leaks_a_frame",
    "corrupt": "gateway_corrupts_a_byte",
    "drop": "gateway_drops_a_frame",
    "close": "gateway_closes_a_socket",
    "no-resume": "gateway_no_resume",
}


def restart_gateway(
    sabotage: str = "", extra_env: dict = None, configuration: dict = None, secrets: dict = None
) -> dict:
    """Restart the stack's gateway with `sabotage` (comma-separated names; "" for none) and
    `extra_env` (other MSGSTACK_* values; None values remove a variable)."""
    state = load_state(home_of(configuration))
    record = state.service("gateway")
    env = dict(record.env)
    env.pop(ENV, None)
    if sabotage:
        env[ENV] = ",".join(SABOTAGES[name.strip()] for name in sabotage.split(","))
    for key, value in (extra_env or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    record.env = env
    save_state(state)
    stop_service("gateway", "SIGTERM", state=state)
    start_service("gateway", state=state, timeout=30)
    return {"pid": record.pid, "sabotage": sabotage}

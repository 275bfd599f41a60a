"""msgstack: the reference messaging stack (the system under test).

Separate OS processes started by
``python -m msgstack {api|auth|dispatcher|consumer|gateway|migrate|seed-users}`` and configured
only by ``MSGSTACK_*`` environment variables (see docs/reference-stack.md). The API writes a message
and an outbox row in one transaction; the dispatcher moves outbox rows to a Redis stream; the
consumer records each stream entry in the ``deliveries`` ledger and acknowledges it only after. The
auth service issues the bearer tokens every API request needs (msgstack/tokens.py). The gateway
pushes each message to its participants' WebSockets (msgstack/gateway.py).
This package never imports ``chaosmessaging``: the extension talks to it over the network only.
"""

SERVICES = (
    "api",
    "auth",
    "dispatcher",
    "consumer",
    "gateway",
    "migrate",
    "seed-users",
    "seed-messages",
)

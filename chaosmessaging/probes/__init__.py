"""Probes: read-only measurements of a messaging platform, one module per target.

`redis` (streams, consumer group, PEL, dead letters), `postgres` (outbox), `http` (readiness),
`metrics` (Prometheus), `k6` (load summaries) and `accounting` (zero-loss proof of a run).
Probes never change the system they look at, and never import the reference stack: they talk to
any platform over its network interfaces, with addresses from `chaosmessaging.config.lookup`.
Modules whose name starts with `_` hold shared helpers and are not scanned by `chaos discover`.

Optional arguments are annotated `name: str = None` (not `str | None`) on purpose: chaoslib's
discovery only turns plain types into "string"/"number"/... for `chaos discover` users; a union
becomes "object".
"""

"""Probes: read-only measurements and verdicts about a messaging platform, one module per target.

- `redis`: streams, the consumer group's pending entries list (PEL), lag, dead letters
- `postgres`: the outbox (backlog, parked rows, oldest undispatched) and read-only SQL
- `http`: readiness of a service (`/readyz`, which dependency is degraded)
- `availability`: services watched through dependency outages (only 200/503, the degraded
  dependency named, recovery time)
- `metrics`: Prometheus values, snapshots and growth
- `k6`: the summaries a load wrote (thresholds, figures)
- `accounting`: the zero-loss proof of a run (every acknowledged message delivered once),
  payload integrity (SHA-256) and delivery latency
- `marks`: the run's own instants (`mark`: "method" first in every method, a fault's removal)
- `recovery`: entries pending at a fault, recovery time after a mark
- `dead_letters`: growth of the dead-letter stream during a run
- `trends`: verdicts over sampled series (maximum throughout, memory growth first vs last window)
- `toxiproxy`: which network faults are in force
- `storage`: the storage layer (circuit breakers, the PostgreSQL pool, errors by type, retries,
  cache hit ratio) and verdicts about what the method changed; a migration's duration
- `windows`: verdicts over a load's time windows (p95 and errors before, during and after a
  fault; each operation's latency first vs last windows)
- `process`: identities of the services' instances through their target backend (no crash: the
  same processes, containers or pods throughout)
- `authorization`: unauthorized reads refused (no leak) and stale updates conflicting, from a
  load's own counts and the API's metrics
- `cache`: the participant cache's hit ratio, its recovery after participant changes, and stale
  reads judged per request after a removal
- `listing`: every page of each user's conversation list walked, exactly their conversations
  (none missing, none twice)
- `login`: login latency against a reference KDF timed on the same machine in the same run
- `delivery`: client-side delivery accounting of WebSocket devices (every acknowledged message on
  every participant's device exactly once, byte-exact, never leaked; latency, disconnects,
  steady frame rate) and non-participant reads denied
- `platform_results`: verdicts on runs against a platform file (`actions.platform_load`):
  client-side evidence only (loss, duplication, leaks, latency, outage answers)

Probes never change the system they look at and never import the reference stack or the actions:
they talk to any platform over its network interfaces through `chaosmessaging.clients`, with
addresses from `chaosmessaging.config.lookup`. Every verdict answers `chaosmessaging.verdicts`'
one shape (`{"ok", "reason", ...figures}`). Modules whose name starts with `_` are not scanned by
`chaos discover`.

Optional arguments are annotated `name: str = None` (not `str | None`) on purpose: chaoslib's
discovery only turns plain types into "string"/"number"/... for `chaos discover` users; a union
becomes "object".
"""

"""Clients that actions and probes share: the one neutral place that turns an address from
configuration into a connection, and a connection failure into an `ActivityFailed` a user can act
on.

Import rule (docs/architecture.md): `chaosmessaging.actions` and `chaosmessaging.probes` both import
from here (and from `config`, `runs`, `faults`, `verdicts`, `util`), never from each other.

- `http`: `http_get`, `service_url` (a service's base URL from configuration)
- `redis`: `redis_client`, `redis_unreachable`, guarded calls, PEL reads (`pel_count`,
  `pending_snapshot`)
- `postgres`: `pg_fetch` (read-only queries through asyncpg)
- `prometheus`: `scrape`, `select`, `candidates` (prometheus-client's text parser)
- `toxiproxy`: `api_url`, `server`, `proxy` (toxiproxy-python bound to the configured API)
- `samples`: where `actions.sampling` writes metric series and `probes.trends` reads them
- `ws`: WebSocket devices recording every frame (`Fleet`), where `actions.websocket` writes the
  frames and `probes.delivery` reads them (`frames_path`, `read_frames`), login
"""

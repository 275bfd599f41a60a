"""Actions: the faults and loads an experiment's method applies, one module per target kind.

- `process`: kill, start, restart, resume a process (embedded-stack service, pidfile or command
  match)
- `consumer`: kill the consumer while it holds unacknowledged entries
- `docker`: kill/stop/start/restart/pause/unpause containers (Docker SDK)
- `toxiproxy`: network partitions, latency and other toxics through the Toxiproxy API
- `load`: k6 loads in the background (start, wait, stop)
- `sampling`: sample the services' Prometheus metrics over a run, in the background
- `storage`: exhaust the application's PostgreSQL pool (with its release), run a migration under
  load (timed), seed a large table
- `membership`: remove participants through the API while their devices stay connected
- `websocket`: WebSocket devices that record every frame they receive (start, stop) and the k6
  load that posts into their conversations

Every module here is discovered automatically by `chaosmessaging.discover()`; modules that inject
faults record them in the fault ledger (`chaosmessaging.faults`) with a recipe to revert them.
Actions never import probes: what both need lives in `chaosmessaging.clients`.
"""

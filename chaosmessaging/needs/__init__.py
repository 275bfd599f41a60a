"""What the experiments need from a platform, and whether a platform meets it.

`catalogue`: every activity's needs (a delivery channel, a ledger, a service, an operation, a
metric role, a proxy in front of a dependency...) and `assess`, which judges one need against a
platform file and the configuration ("runnable", "needs ..." or "n/a" with the reason);
`platform_applies` turns an unmet need into an "n/a" verdict. `check`: `chaosmessaging
check-platform`'s live checks and its table.

It sits above `chaosmessaging.platform` (the platform file: schema, loader, templates) and the
clients it uses for live checks, so wiring runs downhill: the platform package imports neither.
"""

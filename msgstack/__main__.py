"""``python -m msgstack {api|auth|dispatcher|consumer|migrate|seed-users}``: one service per OS
process (``seed-users`` and ``migrate`` run once and exit)."""

from __future__ import annotations

import asyncio
import logging
import sys

from msgstack import SERVICES
import asyncpg

from msgstack.config import ConfigError, load
from msgstack.db import describe

USAGE = f"usage: python -m msgstack {{{'|'.join(SERVICES)}}}  (configured by MSGSTACK_* variables)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SERVICES or (len(argv) > 1 and argv[0] != "seed-users"):
        print(USAGE, file=sys.stderr)
        return 2
    service = argv[0]
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {service}[%(process)d] %(name)s: %(message)s",
    )
    try:
        settings = load(service)
    except ConfigError as exc:
        logging.getLogger("msgstack").error("configuration error: %s", exc)
        return 2

    if service == "migrate":
        from msgstack.migrate import MigrationError, apply

        try:
            asyncio.run(apply(settings.pg_dsn))
        except MigrationError as exc:
            logging.getLogger("msgstack.migrate").error("%s", exc)
            return 1
        return 0
    if service == "seed-users":
        return _seed(settings, argv[1:])

    from msgstack.service import build_app, serve

    if service == "api":
        if settings.api_workers > 1:
            return _serve_workers(settings)
        from msgstack.api import create_app

        app = create_app(settings)
    elif service == "auth":
        from msgstack.auth import create_app as create_auth_app

        app = create_auth_app(settings)
    elif service == "dispatcher":
        from msgstack import dispatcher

        app = build_app(settings, [], dispatcher.run)
    else:
        from msgstack import consumer

        app = build_app(settings, [], consumer.run)
    serve(app, settings)
    return 0


def _serve_workers(settings) -> int:
    """The API as uvicorn's supervisor of MSGSTACK_API_WORKERS processes on one port.

    Prometheus multiprocess mode: each worker writes its samples to files in a private
    directory and /metrics (answered by whichever worker the scrape reaches) sums them all, so a
    probe's counters are the service's totals, not one worker's share.
    """
    import os
    import shutil
    import tempfile

    from msgstack.service import serve

    shared = tempfile.mkdtemp(prefix="msgstack-api-")
    os.makedirs(os.path.join(shared, "metrics"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(shared, "metrics")
    # tokens any worker resolved, recalled by its siblings while Redis is down (workershare.py)
    os.environ["MSGSTACK_WORKERS_DIR"] = shared
    try:
        serve("msgstack.api:app_from_env", settings, workers=settings.api_workers)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    return 0


def _seed(settings, argv: list[str]) -> int:
    from msgstack.seed import SeedError, parse_args, password_from_env, seed_users

    log = logging.getLogger("msgstack.seed")
    try:
        args = parse_args(argv)
        password = password_from_env(args.password_env)
        result = asyncio.run(seed_users(settings, args.count, args.prefix, password))
    except SeedError as exc:
        log.error("%s", exc)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        log.error("seeding failed: %s", describe(exc))
        return 1
    print(result.summary(args.prefix, args.count, args.password_env))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

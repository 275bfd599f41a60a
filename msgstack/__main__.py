"""``python -m msgstack {api|auth|dispatcher|consumer|gateway|migrate|seed-users|seed-messages}``:
one service per OS process (``migrate``, ``seed-users`` and ``seed-messages`` run once and exit).

``migrate`` applies the pending regular migrations; ``migrate --name NNNN_name`` or
``migrate --file path.sql`` runs one migration (e.g. an online one, under load) and prints its
duration; ``seed-messages --rows N`` makes the messages table large (plan test 13).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from msgstack import SERVICES
import asyncpg

from msgstack.config import ConfigError, load
from msgstack.db import describe

USAGE = (
    f"usage: python -m msgstack {{{'|'.join(SERVICES)}}}  (configured by MSGSTACK_* variables)\n"
    "       python -m msgstack migrate [--name NNNN_name | --file path.sql]\n"
    "       python -m msgstack seed-messages --rows N [--conversations C]"
)


def _tool_args(service: str, rest: list[str]) -> argparse.Namespace | None:
    parser = argparse.ArgumentParser(prog=f"python -m msgstack {service}", add_help=False)
    if service == "migrate":
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--name")
        group.add_argument("--file")
    elif service == "seed-messages":
        parser.add_argument("--rows", type=int, required=True)
        parser.add_argument("--conversations", type=int, default=1000)
    try:
        return parser.parse_args(rest)
    except SystemExit:
        return None


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SERVICES:
        print(USAGE, file=sys.stderr)
        return 2
    service, rest = argv[0], argv[1:]
    args = _tool_args(service, rest) if service in ("migrate", "seed-messages") else None
    if service != "seed-users" and (
        (rest and args is None) or (service == "seed-messages" and args is None)
    ):
        print(USAGE, file=sys.stderr)
        return 2
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
        from msgstack.migrate import MigrationError, apply, apply_one, resolve

        try:
            if args is not None and (args.name or args.file):
                took = asyncio.run(apply_one(settings.pg_dsn, resolve(args.name, args.file)))
                print(json.dumps({"migration": args.name or args.file, "seconds": took}))
            else:
                asyncio.run(apply(settings.pg_dsn))
        except MigrationError as exc:
            logging.getLogger("msgstack.migrate").error("%s", exc)
            return 1
        return 0
    if service == "seed-messages":
        from msgstack.migrate import MigrationError
        from msgstack.seed_messages import seed

        try:
            added = asyncio.run(seed(settings.pg_dsn, args.rows, args.conversations))
        except MigrationError as exc:
            logging.getLogger("msgstack.seed_messages").error("%s", exc)
            return 1
        print(json.dumps({"rows": args.rows, "added": added}))
        return 0
    if service == "seed-users":
        return _seed(settings, argv[1:])

    if service == "gateway":
        from msgstack import gateway

        # uvloop when installed, as uvicorn picks it for the HTTP services: the gateway relays
        # every message to its sockets, and its loop is its main cost (docs/performance.md)
        with asyncio.Runner(loop_factory=_fast_loop()) as runner:
            runner.run(gateway.run(settings))
        return 0

    from msgstack.service import build_app, serve

    if service == "api":
        if settings.api_workers > 1:
            return _serve_workers(settings)
        from msgstack.api import create_app

        app = create_app(settings)
    elif service == "auth":
        from msgstack.auth_service import create_app as create_auth_app

        app = create_auth_app(settings)
    elif service == "dispatcher":
        from msgstack import dispatcher

        app = build_app(settings, [], dispatcher.run)
    else:
        from msgstack import consumer

        app = build_app(settings, [], consumer.run)
    serve(app, settings)
    return 0


def _fast_loop():
    """uvloop's event loop factory, or None (asyncio's own) when uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


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

"""`python -m chaosmessaging.proxy [--host H] [--port P] [--config FILE]`: run the fault proxy.

Exits 0 on SIGTERM/SIGINT after closing every listener and proxied connection; exits 2 with a
one-line reason if it cannot start (port taken, bad config).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from chaosmessaging.util import port_number

from .server import ProxyServerError, load_config, serve


def _port(text: str) -> int:
    try:
        return port_number(text, "--port")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaosmessaging.proxy",
        description="Toxiproxy-compatible fault proxy (HTTP API on host:port).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="API listen host (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8474, help="API listen port (default 8474)")
    parser.add_argument(
        "--config",
        help="JSON array of proxies to create at start "
        '([{"name", "listen", "upstream"}], as Toxiproxy)',
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = load_config(args.config) if args.config else None
    await serve(args.host, args.port, config, stop=stop)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_main(args))
    except ProxyServerError as exc:
        print(f"chaosmessaging.proxy: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

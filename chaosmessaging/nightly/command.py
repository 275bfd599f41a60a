"""The `chaosmessaging nightly | dashboard | baseline` commands (argument parsing in `cli`).

`nightly` runs the suite into one results folder, appends the night's figures to the history,
renders the night's dashboard and the index across nights, and sends the alerts; its exit code
is the suite's (0: every blocking experiment passed; 1: one failed; 130: interrupted).
`baseline` judges the history (plan test 15; the weekly job) and exits 1 on a regression,
`EXIT_NOT_ENOUGH_HISTORY` (4) when the history holds too few nights to judge, 2 when the history
file is missing or unreadable. Every input of `nightly` is checked before the first experiment
runs; a late error (the coverage gate, an alert) never loses the night's history and dashboard.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path


__all__ = ["nightly", "render", "baseline", "add_arguments", "EXIT_NOT_ENOUGH_HISTORY"]

#: `baseline`: the history holds fewer nights than a trend needs (not a pass, not a regression)
EXIT_NOT_ENOUGH_HISTORY = 4


def _read_json(path: Path, what: str) -> object:
    """The JSON in `path`, or ValueError naming the file and what is wrong with it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} cannot be read ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({exc})") from None


def _input_errors(args: argparse.Namespace) -> list[str]:
    """Every nightly input that would fail late, checked before the first experiment."""
    errors = []
    if args.experiments and not Path(args.experiments).is_dir():
        errors.append(
            f"--experiments {args.experiments} is not a folder: give the folder holding the "
            "experiments (default ./experiments)"
        )
    if args.coverage:
        try:
            doc = _read_json(Path(args.coverage), "--coverage file")
            float(doc["totals"]["percent_covered"])  # type: ignore[index]
        except ValueError as exc:
            errors.append(str(exc))
        except (KeyError, TypeError):
            errors.append(
                f"--coverage file {args.coverage} has no totals.percent_covered: give the JSON "
                "report of pytest-cov (--cov-report=json)"
            )
    if args.history and Path(args.history).exists():
        try:
            doc = _read_json(Path(args.history), "--history file")
            if not isinstance(doc, dict) or not isinstance(doc.get("nights", []), list):
                errors.append(f"--history file {args.history} is not a nightly history")
        except ValueError as exc:
            errors.append(str(exc))
    if args.results and Path(args.results).exists() and not Path(args.results).is_dir():
        errors.append(f"--results {args.results} is a file, not a folder")
    return errors


def _print(msg: str) -> None:
    print(msg, flush=True)


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """Add the nightly, dashboard and baseline subcommands to the CLI's subparsers."""
    p = sub.add_parser("nightly", help="run the nightly suite (every experiments/*.json)")
    p.add_argument(
        "--profile",
        default="smoke",
        help="smoke (the experiments' own values), a profile name of experiments/profiles/ "
        "(nightly) or a path to a profile file",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    p.add_argument(
        "--results",
        default=None,
        help="this night's results folder (default reports/nightly/<UTC date>)",
    )
    p.add_argument("--experiments", default=None, help="experiments folder (default ./experiments)")
    p.add_argument(
        "--history",
        default=None,
        help="history file to append to (default <results>/../history.json)",
    )
    p.add_argument(
        "--coverage",
        default=None,
        help="coverage.json (pytest-cov --cov-report=json) to record and gate at 92%%",
    )
    p.add_argument(
        "--keep-stack",
        action="store_true",
        help="leave the embedded stack running if the suite started it",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="print the experiments as a JSON list (the CI matrix) and exit",
    )
    p.add_argument("--no-alerts", action="store_true", help="do not post to webhooks")
    p.set_defaults(func=nightly)

    d = sub.add_parser("dashboard", help="render the dashboard of a results folder again")
    d.add_argument("results", help="a night's folder, or the root holding the nights")
    d.add_argument(
        "--history",
        default=None,
        help="history file for the trend charts (default <results>/../history.json for a "
        "night, <results>/history.json for the root)",
    )
    d.set_defaults(func=render)

    b = sub.add_parser("baseline", help="judge the history for regressions (plan test 15)")
    b.add_argument("--history", required=True, help="the history file the nightly runs append to")
    b.add_argument(
        "--profile",
        default="nightly",
        help="judge only the nights run with this profile (default nightly)",
    )
    b.add_argument(
        "--weekly-report", action="store_true", help="post the weekly trend report to the webhooks"
    )
    b.set_defaults(func=baseline)


def _history_path(args: argparse.Namespace, results: Path) -> Path:
    return Path(args.history) if args.history else results.parent / "history.json"


def nightly(args: argparse.Namespace) -> int:
    from chaosmessaging.nightly import alerts, catalog, dashboard, history, runner

    problems = _input_errors(args)
    if problems:
        for problem in problems:
            _print(f"error: {problem}")
        return 2
    try:
        entries = catalog.discover(args.experiments, args.only)
        catalog.profile_values(args.profile, args.experiments)
    except (ValueError, FileNotFoundError) as error:
        _print(f"error: {error}")
        return 2
    if args.list:
        print(json.dumps([e.name for e in entries]))
        return 0
    if not entries:
        _print("error: no experiment found")
        return 2
    results = Path(args.results) if args.results else runner.default_results_dir()
    _print(
        f"nightly suite: {len(entries)} experiments, profile {args.profile}, results in {results}"
    )
    suite = runner.run_suite(
        entries, args.profile, results, home=args.home, progress=_print, keep_stack=args.keep_stack
    )
    data = suite.to_json()
    figures = history.night_figures(results)
    exit_code = suite.exit_code()
    late: list[str] = []  # errors after the suite ran: reported, never losing the night

    def step(what: str, action):  # noqa: ANN001, ANN202 - a local helper
        try:
            return action()
        except Exception as exc:
            late.append(f"{what} failed: {type(exc).__name__}: {exc}")
            _print(f"error: {late[-1]}")
            return None

    if args.coverage:
        gate = step("the coverage gate", lambda: history.coverage_gate(args.coverage))
        if gate is not None:
            figures["suite.coverage_pct"] = gate["measured_pct"]
            exit_code = history.apply_gate(results, gate) if exit_code != 130 else exit_code
            _print(gate["reason"])
    hist_path = _history_path(args, results.resolve())
    hist = step(
        f"appending to the history {hist_path}",
        lambda: history.append(hist_path, suite.night, args.profile, figures, suite.git_sha),
    )
    findings = step("judging the history", lambda: history.judge(hist, args.profile)) or []
    page = step("the night's dashboard", lambda: dashboard.render_night(results, hist_path))
    index = step(
        "the index of nights",
        lambda: dashboard.render_index(results.resolve().parent, hist_path, args.profile),
    )
    _print(f"dashboard: {page}\nindex:     {index}")
    if not args.no_alerts and alerts.channels():
        url = os.environ.get("CHAOSMESSAGING_DASHBOARD_URL")
        for text in (
            alerts.critical_failures(data, url),
            alerts.regressions(findings, suite.night, url),
            alerts.daily_summary(data, findings, url),
        ):
            if text:
                alerts.send(text)
    for exp in suite.experiments:
        mark = "ok  " if exp.status == "passed" else ("warn" if not exp.blocking else "FAIL")
        _print(f"{mark} {exp.name:<28} {exp.status:<11} {exp.duration_s or 0:>6.0f}s {exp.reason}")
    wall = (suite.ended_at or suite.started_at) - suite.started_at
    if late and exit_code == 0:
        exit_code = 1  # the experiments passed, but the night's record is incomplete
    _print(f"suite {'passed' if exit_code == 0 else 'FAILED'} in {wall:.0f}s (exit {exit_code})")
    return exit_code


def render(args: argparse.Namespace) -> int:
    from chaosmessaging.nightly import dashboard

    folder = Path(args.results)
    if not folder.is_dir():
        _print(f"error: {folder} is not a folder of nightly results (it does not exist)")
        return 2
    if (folder / "suite.json").exists():
        try:
            _read_json(folder / "suite.json", "the night's suite file")
        except ValueError as exc:
            _print(f"error: {exc}")
            return 2
    elif not list(folder.glob("*/suite.json")):
        _print(
            f"error: {folder} holds no nightly results (no suite.json in it or in a night's "
            "folder under it): give a night's folder or the root holding the nights"
        )
        return 2
    if (folder / "suite.json").exists():
        hist = Path(args.history) if args.history else folder.resolve().parent / "history.json"
        _print(str(dashboard.render_night(folder, hist)))
    else:
        hist = Path(args.history) if args.history else folder / "history.json"
        _print(str(dashboard.render_index(folder, hist)))
    return 0


def baseline(args: argparse.Namespace) -> int:
    from chaosmessaging.nightly import alerts, history

    from chaosmessaging.nightly.regressions import CONSECUTIVE

    path = Path(args.history)
    if not path.is_file():
        _print(
            f"error: the history file {path} does not exist: pass the history.json the nightly "
            "job appends to (--history); nothing was judged"
        )
        return 2
    try:
        hist = _read_json(path, "the history file")
        if not isinstance(hist, dict):
            raise ValueError(f"the history file {path} is not a nightly history")
    except ValueError as exc:
        _print(f"error: {exc}")
        return 2
    nights, _ = history.series(hist, args.profile)
    needed = CONSECUTIVE + 2
    if len(nights) < needed:
        _print(
            f"not enough history ({len(nights)} of {needed} nights of profile {args.profile} in "
            f"{path}): nothing judged, no regression can be ruled out"
        )
        return EXIT_NOT_ENOUGH_HISTORY
    findings = history.judge(hist, args.profile)
    for f in findings:
        if f.regressed or f.vs_last7_pct is not None:
            _print(f"{'REGRESSED' if f.regressed else 'ok       '} {f.metric}: {f.reason}")
    if args.weekly_report and alerts.channels():
        url = os.environ.get("CHAOSMESSAGING_DASHBOARD_URL")
        alerts.send(alerts.weekly_report(findings, nights, url))
        text = alerts.regressions(
            findings, nights[-1] if nights else dt.date.today().isoformat(), url
        )
        if text:
            alerts.send(text)
    regressed = [f for f in findings if f.regressed]
    _print(f"{len(regressed)} regression(s) over {len(nights)} nights of {args.profile}")
    return 1 if regressed else 0

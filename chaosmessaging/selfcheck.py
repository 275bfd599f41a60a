"""`chaosmessaging selfcheck`: prove the experiments catch real bugs, and pass a correct stack.

An experiment that passes proves something only if it would fail against a broken platform. The
self-check starts private embedded stacks whose reference services carry one deliberate,
realistic bug each (a *mutant*: `MSGSTACK_MUTANT=<name>` switches it on at a marked point of the
reference services, `mutants.on("<name>")`, or `mutants.once("<name>")` for a bug that strikes
once per process), runs the experiment(s) meant to
catch it through the real `chaos run`, and runs the same experiments against a clean stack. The
mutant's environment reaches every service of its stack and the `chaos run` itself (so commands
the experiment starts, such as the migration runner, carry the bug too). It prints a
table (mutant, experiment, expected, actual, caught) and fails when a mutant survives (its run
did not end "deviated") or the clean stack fails an experiment.

The catalogue is data, in `chaosmessaging.mutants` (`CATALOGUE`, one `Mutant` per bug; an
experiment added later registers its own with `register(Mutant(...))`, re-exported here).
`SELFCHECK_VARS` shortens waits that only matter for a slow but correct stack
(settle timeouts), per experiment, for every run, clean or mutant alike.

Runs one experiment at a time (each starts its own load); a full pass (38 mutants, 16 clean runs)
takes about an hour and a half on a 2-core machine, so it belongs to the weekly workflow, one job
per experiment: `chaosmessaging selfcheck` (all), `chaosmessaging selfcheck --only mixed_load` (an
experiment's mutants and its clean run), `--only consumer_no_reclaim` (one mutant and the clean
run of its experiment), `chaosmessaging selfcheck --list`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaosmessaging.mutants import CATALOGUE, MUTANT_ENV, Mutant, by_name, register

__all__ = [
    "Mutant",
    "CATALOGUE",
    "SELFCHECK_VARS",
    "register",
    "plan",
    "run",
    "table",
    "conclusion",
    "main",
]


# Per experiment: values passed with --var-file to every self-check run of it (clean and mutant),
# to keep runs short where waiting longer only helps a slow-but-correct stack, and to strike
# often enough where a single run's random faults might miss a narrow window.
SELFCHECK_VARS: dict[str, dict] = {
    # 10 random kills instead of the smoke profile's 4 (and a load long enough for them): a bug
    # whose loss window is a few milliseconds of each batch is hit by some kills, not by every one;
    # each kill now waits until the consumer is ready again (about 13 s apiece on 2 cores), so the
    # load must last past ten of them for the catch-up kill to find a backlog
    "consumer_resilience": {"t8_settle_timeout_s": 30, "t8_kills": 10, "t8_messages": 18000},
    "redis_partition": {"t9_settle_timeout_s": 30},
    "redis_latency": {"lat_settle_timeout_s": 30},
    "message_soak": {"t1_settle_timeout_s": 30},
}


@dataclass
class Row:
    """One run of the table: a mutant (or "clean") against one experiment."""

    mutant: str
    experiment: str
    expected: str  # "deviated" for a mutant, "completed" for the clean stack
    actual: str = "not run"
    breached: list[str] = field(default_factory=list)  # probes whose tolerance failed
    reason: str = ""
    seconds: float = 0.0
    journal: str = ""

    @property
    def good(self) -> bool:
        return self.actual == self.expected

    @property
    def verdict(self) -> str:
        if self.mutant == "clean":
            return "passes" if self.good else "FAILS"
        return "yes" if self.good else "NO"


def plan(only: Iterable[str] = (), catalogue: list[Mutant] | None = None) -> list[Row]:
    """The runs to make: each selected mutant against each of its experiments, then the clean
    stack against every experiment involved. `only` names mutants and/or experiments."""
    catalogue = CATALOGUE if catalogue is None else catalogue
    wanted = {w for item in only for w in str(item).split(",") if w}
    known = {m.name for m in catalogue} | {e for m in catalogue for e in m.experiments}
    unknown = wanted - known - {"clean"}
    if unknown:
        raise ValueError(
            f"unknown mutant or experiment {', '.join(sorted(unknown))}; "
            "`chaosmessaging selfcheck --list` shows the catalogue"
        )
    rows = []
    for mutant in catalogue:
        for experiment in mutant.experiments:
            if not wanted or mutant.name in wanted or experiment in wanted:
                rows.append(Row(mutant.name, experiment, "deviated"))
    experiments = dict.fromkeys(r.experiment for r in rows)
    if wanted == {"clean"}:
        experiments = dict.fromkeys(e for m in catalogue for e in m.experiments)
    rows += [Row("clean", e, "completed") for e in experiments]
    return rows


def _mutant(name: str) -> Mutant:
    return by_name(name)


def _chaos() -> str:
    sibling = Path(sys.executable).with_name("chaos")
    return str(sibling) if sibling.exists() else (shutil.which("chaos") or "chaos")


def _experiment_path(name: str) -> Path:
    from chaosmessaging.resources import bundled

    path = bundled("experiments") / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"experiment {name!r} not found at {path}")
    return path


def _outcome(journal: dict) -> tuple[str, list[str], str]:
    """(actual, breached probe names, first reason) of a chaos journal."""
    actual = "deviated" if journal.get("deviated") else str(journal.get("status", "unknown"))
    after = (journal.get("steady_states") or {}).get("after") or {}
    before = (journal.get("steady_states") or {}).get("before") or {}
    breached, reason = [], ""
    for state in (before, after):
        for probe in state.get("probes") or []:
            if probe.get("tolerance_met") is False:
                breached.append(probe["activity"]["name"])
                output = probe.get("output")
                if not reason and isinstance(output, dict) and output.get("reason"):
                    reason = str(output["reason"])
    if not reason:
        failed = [r for r in journal.get("run") or [] if r.get("status") == "failed"]
        if failed:
            reason = f"{failed[0]['activity']['name']}: {failed[0].get('exception', [''])[-1]}"
    return actual, breached, reason.strip()


def _run_experiment(
    row: Row, home: Path, workdir: Path, say: Callable[[str], None], timeout: float
) -> None:
    where = workdir / f"{row.mutant}--{row.experiment}"
    where.mkdir(parents=True, exist_ok=True)
    journal = where / "journal.json"
    command = [
        _chaos(),
        "--log-file",
        str(where / "chaos.log"),
        "run",
        "--journal-path",
        str(journal),
    ]
    overrides = SELFCHECK_VARS.get(row.experiment)
    if overrides:
        (where / "vars.json").write_text(json.dumps({"configuration": overrides}))
        command += ["--var-file", str(where / "vars.json")]
    command.append(str(_experiment_path(row.experiment)))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CHAOSMESSAGING_RUN_ID", "CHAOSMESSAGING_API_URL", MUTANT_ENV)
    }
    env["CHAOSMESSAGING_HOME"] = str(home)
    if row.mutant != "clean":  # commands the experiment runs (a migration) carry the bug too
        env.update(_mutant(row.mutant).environment())
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=where,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # live progress: the activities as chaos runs them
            text = line.rstrip()
            if any(
                k in text
                for k in (
                    "Action:",
                    "Probe:",
                    "Steady state",
                    "Experiment ended",
                    "Rollback",
                    "deviat",
                    "ERROR",
                    "CRITICAL",
                )
            ):
                say(f"      {time.monotonic() - started:6.1f}s  {text.split('] ', 1)[-1]}")
            if time.monotonic() - started > timeout:
                raise subprocess.TimeoutExpired(command, timeout)
        proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        row.actual, row.reason = "timeout", f"chaos run took more than {timeout:g} s"
    row.seconds = round(time.monotonic() - started, 1)
    row.journal = str(journal)
    if row.actual != "timeout":
        if journal.exists():
            row.actual, row.breached, row.reason = _outcome(json.loads(journal.read_text()))
        else:
            row.actual, row.reason = "no journal", f"chaos exited {proc.returncode}"


def run(
    rows: list[Row], workdir: Path, say: Callable[[str], None] = print, timeout: float = 600.0
) -> list[Row]:
    """Make every run of `rows` (a stack per mutant, one clean stack), filling in the results."""
    from chaosmessaging.stack import launcher, servers

    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.mutant, []).append(row)
    done = 0
    for mutant, group in groups.items():
        home = workdir / ("clean" if mutant == "clean" else f"m-{mutant}")
        env = {} if mutant == "clean" else _mutant(mutant).environment()
        say(f"== {mutant}: starting a private embedded stack in {home}")
        try:
            launcher.up(
                home, proxy_port=servers.free_port(), env=env, progress=lambda msg: say(f"   {msg}")
            )
        except Exception as exc:  # a stack that does not start is a failed check, not a crash
            for row in group:
                row.actual, row.reason = "stack failed", f"{type(exc).__name__}: {exc}"
            say(f"   stack did not start: {exc}")
            launcher.down(home, purge=True)
            continue
        try:
            for row in group:
                done += 1
                say(
                    f"[{done}/{len(rows)}] {mutant} x {row.experiment}: chaos run "
                    f"(expected {row.expected})"
                )
                _run_experiment(row, home, workdir, say, timeout)
                caught = "caught" if row.good else "NOT CAUGHT"
                if mutant == "clean":
                    caught = "passes" if row.good else "FAILS"
                say(
                    f"   -> {row.actual} in {row.seconds:g} s ({caught})"
                    + (f": {row.reason[:160]}" if row.reason else "")
                )
        finally:
            launcher.down(home, purge=True)
    return rows


def table(rows: list[Row]) -> str:
    """The result table, as plain text."""
    head = ("mutant", "experiment", "expected", "actual", "caught", "breached", "seconds")
    lines = [head] + [
        (
            r.mutant,
            r.experiment,
            r.expected,
            r.actual,
            r.verdict,
            ", ".join(r.breached[:2]) or "-",
            f"{r.seconds:g}",
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(
    only: Iterable[str] = (),
    workdir: str | None = None,
    list_only: bool = False,
    timeout: float = 600.0,
    say: Callable[[str], None] = print,
) -> int:
    """The `chaosmessaging selfcheck` command; returns its exit code."""
    if list_only:
        for m in CATALOGUE:
            say(f"{m.name:<28} {m.service:<10} {', '.join(m.experiments):<20} {m.bug}")
        return 0
    try:
        rows = plan(only)
        for row in rows:
            _experiment_path(row.experiment)
    except (ValueError, FileNotFoundError) as exc:
        say(f"error: {exc}")
        return 2
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cm-selfcheck-"))
    root.mkdir(parents=True, exist_ok=True)
    mutants = len({r.mutant for r in rows} - {"clean"})
    say(
        f"selfcheck: {len(rows)} runs ({mutants} mutants, clean stack on "
        f"{len({r.experiment for r in rows if r.mutant == 'clean'})} experiments) in {root}"
    )
    run(rows, root, say, timeout)
    say("")
    say(table(rows))
    (root / "selfcheck.json").write_text(
        json.dumps([{**asdict(r), "caught": r.verdict} for r in rows], indent=2)
    )
    code, lines = conclusion(rows)
    for line in ["", *lines]:
        say(line)
    if code:
        say(f"journals and logs in {root}")
    return code


def conclusion(rows: list[Row]) -> tuple[int, list[str]]:
    """The exit code (1 when a mutant survived or the clean stack failed) and what to say."""
    survivors = [r for r in rows if r.mutant != "clean" and not r.good]
    clean_failures = [r for r in rows if r.mutant == "clean" and not r.good]
    lines = []
    if survivors:
        lines.append(
            f"{len(survivors)} mutant run(s) not caught: "
            + ", ".join(f"{r.mutant} x {r.experiment} ({r.actual})" for r in survivors)
        )
    if clean_failures:
        lines.append(
            f"the clean stack failed {len(clean_failures)} experiment(s): "
            + ", ".join(f"{r.experiment} ({r.actual})" for r in clean_failures)
        )
    if survivors or clean_failures:
        return 1, lines
    return 0, ["every mutant caught, the clean stack passes"]
